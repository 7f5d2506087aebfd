"""Re-runs of the playbook against the converged host: check mode and bad input."""

import datetime
import json
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from playbook import SINGLE_HOST_GROUPS, recap, run_playbook


def test_check_mode_on_converged_host_changes_nothing(container, tmp_path):
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
        ('{"nginx_tls_mode": "letsencrypt"}', "nginx_tls_mode"),
        ('{"nginx_tls_mode": "acme"}', "nginx_acme_email"),
        # Molecule's hosts are "localhost": no ACME CA can validate that name.
        ('{"nginx_tls_mode": "acme", "nginx_acme_email": "ops@example.org"}', "nginx_acme_domains"),
    ],
)
def test_bad_inventory_values_stop_the_run_early(
    debian12_container, tmp_path, extra_vars, variable
):
    container = debian12_container
    result, seconds = run_playbook(container, tmp_path, "-e", extra_vars)
    print(f"{variable}: refused after {seconds:.1f}s")
    assert result.returncode != 0
    assert variable in result.stdout + result.stderr
    counters = recap(result.stdout, container)
    assert counters["changed"] == 0
    assert counters["failed"] == 1


def test_provided_certificate_is_served(host, debian12_container, tmp_path):
    container = debian12_container
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provided.chatstack.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    provided = {
        "nginx_tls_mode": "provided",
        "nginx_tls_provided_certificate": certificate.public_bytes(Encoding.PEM).decode(),
        "nginx_tls_provided_private_key": key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ).decode(),
    }
    served = (
        "openssl s_client -connect 127.0.0.1:443 </dev/null 2>/dev/null"
        " | openssl x509 -noout -subject"
    )
    try:
        (tmp_path / "provided").mkdir()
        result, _ = run_playbook(
            container, tmp_path / "provided", "--tags", "nginx", "-e", json.dumps(provided)
        )
        assert result.returncode == 0, result.stdout
        assert "provided.chatstack.test" in host.check_output(served)
        assert provided["nginx_tls_provided_private_key"] not in result.stdout
    finally:
        # Back to the default: the self-signed certificate is issued again, and the
        # blackbox probe on this host (the scenario's monitoring host) must trust the new one.
        (tmp_path / "selfsigned").mkdir()
        monitored = {group: [container] for group in (*SINGLE_HOST_GROUPS, "monitoring")}
        result, _ = run_playbook(monitored, tmp_path / "selfsigned", "--tags", "nginx,blackbox")
    assert result.returncode == 0, result.stdout
    assert "provided.chatstack.test" not in host.check_output(served)


def test_a_failing_verbose_run_prints_no_secret(host, debian12_container, tmp_path):
    """-vvv prints every task's arguments, items and results, and a failed run is
    what an operator pastes into a ticket: no password or SECRET_KEY may be in it."""
    # Nearly a whole converge: once, as what is printed does not depend on the release.
    container = debian12_container
    # Valid for the argument specs, refused by `nginx -t`: the run fails in the
    # Nginx play, after Redis, the app, uWSGI and Daphne read and used every secret.
    result, _ = run_playbook(
        container, tmp_path, "-vvv", "-e", '{"nginx_client_max_body_size": "1 gigabyte"}'
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, "a run with an invalid Nginx setting succeeded"
    assert recap(result.stdout, container)["failed"] == 1
    failed_at = output[: output.index("fatal: [")].rsplit("TASK [", 1)[1]
    assert failed_at.startswith("nginx : Write the Nginx configuration"), failed_at[:200]
    for secret in ("app_secret_key", "redis_app_password", "redis_monitor_password"):
        assert f"Publish the secret as {secret}" in output, f"{secret} was not read in this run"

    paths = host.run(
        "ls /etc/chatstack/secret_key /etc/redis/*.password /etc/postgresql/*.password"
    )
    secrets = {path: host.file(path).content_string.strip() for path in paths.stdout.split()}
    assert len(secrets) >= 3, secrets.keys()
    for path, secret in secrets.items():
        assert len(secret) >= 20, f"{path} holds no generated secret"
    # Names only: the assertion message itself must not print a secret.
    printed = [
        path
        for path, secret in secrets.items()
        if secret in output or urllib.parse.quote(secret, safe="") in output
    ]
    assert printed == [], "a -vvv run prints the secrets in these files"


def test_a_secret_that_cannot_be_written_is_named_not_shown(container, tmp_path):
    """A vaulted SECRET_KEY the environment file cannot hold stops the run before any
    change, and the message names the setting without printing the key, even with -vvv."""
    key = "vault'Kept4Years" + "x" * 40
    result, _ = run_playbook(container, tmp_path, "-vvv", "-e", json.dumps({"app_secret_key": key}))
    output = result.stdout + result.stderr
    assert result.returncode != 0, "a SECRET_KEY with a quote was written to the environment file"
    assert "app_secret_key: quotes and newlines cannot be written" in output, output[-3000:]
    assert recap(result.stdout, container)["changed"] == 0
    assert "Kept4Years" not in output, "the refused SECRET_KEY is printed"
