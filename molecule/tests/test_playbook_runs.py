"""Re-runs of the playbook against the converged host: check mode and bad input."""

import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from playbook import recap, run_playbook


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
def test_bad_inventory_values_stop_the_run_early(container, tmp_path, extra_vars, variable):
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
        # Back to the default: the self-signed certificate is issued again.
        (tmp_path / "selfsigned").mkdir()
        result, _ = run_playbook(container, tmp_path / "selfsigned", "--tags", "nginx")
    assert result.returncode == 0, result.stdout
    assert "provided.chatstack.test" not in host.check_output(served)
