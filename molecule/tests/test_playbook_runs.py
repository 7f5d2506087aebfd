"""Re-runs of the playbook against the converged host: check mode and bad input."""

import pytest
from playbook import recap, run_playbook


def test_check_mode_on_converged_host_changes_nothing(host, tmp_path):
    container = host.backend.get_hostname()
    result, _ = run_playbook(container, tmp_path, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    counters = recap(result.stdout, container)
    assert counters["changed"] == 0, result.stdout
    assert counters["failed"] == 0


@pytest.mark.parametrize(
    ("extra_vars", "variable"),
    [
        ('{"daphne_ports": ["seven"]}', "daphne_ports"),
        ('{"redis_port": "six"}', "redis_port"),
        ('{"app_channel_layer": "channels.layers.Unknown"}', "app_channel_layer"),
        ('{"nginx_https_public_port": "https"}', "nginx_https_public_port"),
        ('{"nginx_ipv6": "perhaps"}', "nginx_ipv6"),
        ('{"uwsgi_processes": "many"}', "uwsgi_processes"),
    ],
)
def test_bad_inventory_values_stop_the_run_early(host, tmp_path, extra_vars, variable):
    container = host.backend.get_hostname()
    result, seconds = run_playbook(container, tmp_path, "-e", extra_vars)
    print(f"{variable}: refused after {seconds:.1f}s")
    assert result.returncode != 0
    assert variable in result.stdout + result.stderr
    counters = recap(result.stdout, container)
    assert counters["changed"] == 0
    assert counters["failed"] == 1
