"""What a converged chatstack host must do, checked on the host itself."""

import asyncio
import json
import re
import socket
import ssl

import pytest
from chatclient import next_of_type
from testhost import LOGIN_FLOOD, UNITS, can_connect, container_address
from waiting import wait_until


@pytest.mark.parametrize("unit", UNITS)
def test_unit_enabled_and_running(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


def test_no_failed_units(host):
    failed = host.check_output("systemctl --failed --no-legend --plain")
    assert failed == ""


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("tcp://127.0.0.1:6379", False),
        ("tcp://127.0.0.1:7001", False),
        ("tcp://0.0.0.0:80", True),
        ("tcp://0.0.0.0:443", True),
    ],
)
def test_listening_sockets(host, address, public):
    assert host.socket(address).is_listening
    port = address.rsplit(":", 1)[1]
    if not public:
        # Backends must not be reachable from outside the host.
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
        assert not host.socket(f"tcp://:::{port}").is_listening


def test_uwsgi_socket_only_for_nginx(host):
    sock = host.file("/run/chatstack-uwsgi.sock")
    assert sock.is_socket
    assert sock.group == "www-data"
    assert sock.mode == 0o660


def test_nginx_config_is_valid(host):
    assert host.run("nginx -t").rc == 0


def test_secrets_are_private(host):
    for path in [
        "/etc/chatstack/chatstack.env",
        "/etc/chatstack/secret_key",
        "/etc/redis/chatstack.password",
    ]:
        secret = host.file(path)
        assert secret.user == "root"
        assert secret.mode == 0o600
    key = host.file("/etc/ssl/private/chatstack.key")
    assert key.mode == 0o600


def test_services_run_unprivileged(host):
    for unit in ["chatstack-uwsgi.service", "chatstack-daphne@7001.service"]:
        pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
        assert host.check_output(f"ps -o user= -p {pid}") == "chatstack"


def test_http_redirects_to_https(host):
    response = host.run(
        "python3 -c \"import http.client as h; c=h.HTTPConnection('127.0.0.1', 80); "
        "c.request('GET', '/chat/'); r=c.getresponse(); "
        "print(r.status, r.getheader('Location'))\""
    )
    status, location = response.stdout.split()
    # The port is the published one (443 here, 8443 in the demo).
    assert status == "301"
    assert re.fullmatch(r"https://127\.0\.0\.1(:\d+)?/chat/", location)


def test_healthz_through_nginx(site):
    """Through Nginx /healthz is public: the process answers, touching no database or Redis."""
    status, _, body = site.session().request("/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


def test_healthz_in_full_on_loopback(host):
    """The deploy's checks call each Daphne process on loopback: they need the real checks."""
    body = host.check_output(
        "python3 -c \"import http.client as h; c=h.HTTPConnection('127.0.0.1', 7001); "
        "c.request('GET', '/healthz', headers={'Host': 'localhost'}); "
        'print(c.getresponse().read().decode())"'
    )
    assert json.loads(body) == {"status": "ok", "database": "ok", "channel_layer": "ok"}


def test_static_files_served_by_nginx(site):
    status, _, page = site.session().request("/accounts/login/")
    assert status == 200
    stylesheet = next(
        part.split('"')[0] for part in page.split('href="')[1:] if part.startswith("/static/")
    )
    status, headers, _ = site.session().request(stylesheet)
    assert status == 200
    assert "max-age" in headers.get("Cache-Control", "")


def test_chat_page_after_signup(site, new_username):
    browser = site.session()
    status, headers, _ = browser.request("/chat/")
    assert status == 302 and "/accounts/login/" in headers["Location"]
    browser.signup(new_username)
    status, _, page = browser.request("/chat/lobby/")
    assert status == 200
    assert "chat-log" in page


def test_websocket_message_reaches_other_client(site, new_username):
    alice, bob = site.session(), site.session()
    alice.signup(new_username + "a")
    bob.signup(new_username + "b")

    async def exchange():
        async with alice.websocket("molecule") as ws_a, bob.websocket("molecule") as ws_b:
            await next_of_type(ws_a, "history")
            await next_of_type(ws_b, "history")
            await ws_a.send(json.dumps({"message": "hello <b>bob</b>"}))
            received = await next_of_type(ws_b, "message")
            echoed = await next_of_type(ws_a, "message")
            return received, echoed

    received, echoed = asyncio.run(exchange())
    assert received["user"] == new_username + "a"
    assert received["message"] == "hello <b>bob</b>"
    assert received["id"] == echoed["id"]


@pytest.mark.parametrize(
    "unit", ["chatstack-uwsgi.service", "chatstack-daphne@7001.service", "chatstack-prune.service"]
)
def test_units_are_sandboxed(host, unit):
    report = host.check_output(f"systemd-analyze security --no-pager {unit}")
    exposure = float(report.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    print(f"systemd-analyze security {unit}: {exposure}")
    assert exposure <= 2.0


def test_daily_prune_runs(host):
    """If it failed, old messages and the Redis keys of emptied rooms would pile up."""
    host.run_expect([0], "systemctl start chatstack-prune.service")
    log = host.check_output("journalctl -u chatstack-prune.service -n 20 --no-pager -o cat")
    assert "Rooms left empty" in log


def test_redis_refuses_unauthenticated_clients(host):
    assert "NOAUTH" in host.check_output("redis-cli -h 127.0.0.1 PING")


def test_redis_app_user_cannot_run_dangerous_commands(host):
    password = host.file("/etc/redis/chatstack.password").content_string
    command = f"REDISCLI_AUTH={password} redis-cli --user chatstack -h 127.0.0.1"
    assert host.check_output(f"{command} PING") == "PONG"
    assert "NOPERM" in host.check_output(f"{command} FLUSHALL")


def test_security_headers_on_pages_and_static_files(site):
    browser = site.session()
    for path in ["/accounts/login/", "/static/chat/chat.css", "/no-such-page/"]:
        _, headers, _ = browser.request(path)
        assert "max-age=" in headers["Strict-Transport-Security"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    # The app sets some of these too; Nginx sends each once.
    _, headers, _ = browser.request("/accounts/login/")
    assert headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        (ssl.TLSVersion.TLSv1_1, False),
        (ssl.TLSVersion.TLSv1_2, True),
        (ssl.TLSVersion.TLSv1_3, True),
    ],
)
def test_tls_protocols_offered(https_base_url, version, accepted):
    address, port = https_base_url.removeprefix("https://").rsplit(":", 1)
    # Only the protocol handshake matters here, not who the server is.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    try:
        with (
            socket.create_connection((address, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=address) as tls,
        ):
            negotiated = tls.version()
    except ssl.SSLError:
        negotiated = None
    assert (negotiated is not None) == accepted


def test_login_posts_are_rate_limited(host):
    # Sent from inside the host (client 127.0.0.1), so the other tests' sign-ups,
    # which all come from the Podman gateway address, keep their own allowance.
    statuses = host.check_output(f"python3 -c '{LOGIN_FLOOD}'").split()
    # The first posts reach Django (403: no CSRF token); beyond the burst, Nginx refuses.
    assert statuses[0] == "403"
    assert "429" in statuses


def test_admin_login_posts_are_rate_limited(host):
    """Guessing superusers' passwords at /admin/login/ is slowed like the account login."""
    flood = LOGIN_FLOOD.replace("/accounts/login/", "/admin/login/")
    statuses = host.check_output(f"python3 -c '{flood}'").split()
    assert "429" in statuses
    refused = host.check_output(
        "grep -c 'limiting requests.*POST /admin/login/' /var/log/nginx/error.log"
    )
    assert int(refused) > 0


# Asks a test Nginx that loads only the client map which client each source address is.
CLIENT_OF = """
import http.client, sys
for source in sys.argv[1:]:
    connection = http.client.HTTPConnection(
        "::1" if ":" in source else "127.0.0.1", 8099, source_address=(source, 0))
    connection.request("GET", "/")
    print(source, connection.getresponse().read().decode())
"""


def test_limits_count_an_ipv6_64_as_one_client(host):
    """Whoever holds a /64 (one subscriber's usual share) must not get a fresh rate-limit
    and connection budget for each of its addresses."""
    clients = {
        "2001:db8:1:2::5": "2001:db8:1:2",
        "2001:db8:1:2:ffff:1:2:9": "2001:db8:1:2",
        "2001:db8:1:3::5": "2001:db8:1:3",
        "2001:db8::7": "2001:db8:0:0",
        "127.0.0.1": "127.0.0.1",
    }
    config = "/run/chatstack-clients-test.conf"
    host.check_output(
        "printf '%s' 'pid /run/chatstack-clients-test.pid; error_log stderr; events {} http {"
        " include /etc/nginx/chatstack-clients.conf; access_log off;"
        " server { listen [::1]:8099; listen 127.0.0.1:8099;"
        " location / { return 200 $chatstack_client; } } }' > " + config
    )
    added = [source for source in clients if ":" in source]
    try:
        for source in added:
            host.check_output(f"ip -6 address add {source}/128 dev lo nodad")
        host.check_output(f"nginx -c {config}")
        answers = host.check_output(f"python3 -c '{CLIENT_OF}' {' '.join(clients)}")
    finally:
        host.run(f"nginx -c {config} -s quit")
        for source in added:
            host.run(f"ip -6 address del {source}/128 dev lo")
    assert dict(line.split() for line in answers.splitlines()) == clients


def test_firewall_drops_unlisted_ports(host, container):
    address = container_address(container)
    # Something listening on every address, on a port the firewall does not list.
    host.check_output(
        "systemd-run --unit=firewall-probe --collect python3 -m http.server --bind 0.0.0.0 9999"
    )
    try:
        wait_until(lambda: host.socket("tcp://0.0.0.0:9999").is_listening, 10, "the probe listens")
        assert can_connect(address, 443)
        assert not can_connect(address, 9999)
    finally:
        host.run("systemctl stop firewall-probe")
