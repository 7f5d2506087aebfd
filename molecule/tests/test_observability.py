"""Exporters, Prometheus and its alert rules, and the logs operators read."""

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import pytest
import yaml
from chatclient import accounts_made_on, next_of_type, post_once
from hostmetrics import (
    REDIS_EXPORTER,
    app_metrics,
    daphne_ports,
    fetch,
    listen_address,
    prometheus_api,
)
from playbook import render_role_template
from testhost import can_connect, container_address
from waiting import wait_until

# port, metric lines that must be there (regular expressions), on every host.
EXPORTERS = {
    "node": (
        9100,
        [
            r"^node_cpu_seconds_total\{",
            r"^node_filesystem_avail_bytes\{",
            r'^node_systemd_unit_state\{name="nginx\.service",state="active".*\} 1$',
            r'^node_systemd_unit_state\{name="chatstack-daphne@7001\.service",'
            r'state="active".*\} 1$',
            # Debian's apt collector, through the textfile directory (Debian 13's writes
            # apt_upgrades_pending only while updates wait: no line at all for none).
            r"^apt_package_cache_timestamp_seconds ",
            r"^node_reboot_required [01]$",
        ],
    ),
    "nginx": (9113, [r"^nginx_up 1$", r"^nginx_connections_active \d+$"]),
    "redis": (9121, [r"^redis_up 1$", r"^redis_connected_clients \d+$"]),
    # Nginx's access log; the blackbox probes of /healthz are requests too.
    "mtail": (3903, [r'^chatstack_nginx_requests_total\{location="/healthz".*status="200"\} ']),
}
RULES = {
    "TargetDown",
    "UnitDown",
    "UnitRestarting",
    "RedisDown",
    "DatabaseDown",
    "ProbeFailed",
    "ProbeSlow",
    "BackupTooOld",
    "BackupOffsiteTooOld",
    "CertificateExpiresSoon",
    "SecurityUpdatesPending",
    "RebootRequired",
    "DiskNearlyFull",
    "RedisMemoryNearlyFull",
    "ChatErrorRate",
    "PageErrors",
    "PagesSlow",
    "BroadcastSlow",
}
# What ss shows for a listener on every address: the exporters (Go) take
# 0.0.0.0 as every IPv4 and IPv6 address.
EVERY_ADDRESS = "*"


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_exporter_answers_with_its_metrics(host, container, exporter):
    port, patterns = EXPORTERS[exporter]
    address = listen_address(host, port)
    # Loopback, or every address behind the firewall when scrapers elsewhere need it.
    assert address in ("127.0.0.1", EVERY_ADDRESS)
    target = address if address == "127.0.0.1" else container_address(container)
    status, body = fetch(host, f"http://{target}:{port}/metrics")
    assert status == 200
    for pattern in patterns:
        assert re.search(pattern, body, re.MULTILINE), f"{exporter}: no {pattern}"


def test_postgres_exporter_where_a_database_runs(host):
    if not host.package("postgresql").is_installed:
        pytest.skip("this host is not in the db group")
    address = listen_address(host, 9187)
    status, body = fetch(host, f"http://{address}:9187/metrics")
    assert status == 200
    assert re.search(r"^pg_up 1$", body, re.MULTILINE)


def test_scrape_ports_refuse_addresses_not_listed(host, container):
    """Scrapers elsewhere are configured: the exporters listen on every address, and
    the firewall admits only chatstack_scrape_addresses."""
    address = container_address(container)
    ruleset = host.check_output("nft list table inet chatstack")
    for port, _ in EXPORTERS.values():
        assert listen_address(host, port) == EVERY_ADDRESS
        # Inside the host the exporter answers on that address ...
        assert fetch(host, f"http://{address}:{port}/metrics")[0] == 200
        # ... the controller, not a listed scraper, is dropped by nftables ...
        assert not can_connect(address, port)
        # ... and the listed one is admitted.
        assert f"ip saddr 192.0.2.10 tcp dport {port} accept" in ruleset


def test_stub_status_on_loopback_only(host):
    assert listen_address(host, 8090) == "127.0.0.1"
    status, body = fetch(host, "http://127.0.0.1:8090/stub_status")
    assert status == 200
    assert body.startswith("Active connections:")


def test_prometheus_listens_on_loopback_only(host):
    if not host.service("prometheus").is_running:
        pytest.skip("this host is not in the monitoring group")
    assert listen_address(host, 9090) == "127.0.0.1"


def targets(host) -> list[dict]:
    return prometheus_api(host, "/api/v1/targets")["activeTargets"]


def test_prometheus_scrapes_every_exporter(host, container):
    if not host.service("prometheus").is_running:
        pytest.skip("this host is not in the monitoring group")

    # The app's own /metrics is another piece of work: its targets are checked below.
    def exporters_if_all_up() -> list[dict] | None:
        exporters = [t for t in targets(host) if t["labels"]["job"] != "chatstack-daphne"]
        down = [
            (t["labels"], t["health"], t["lastError"]) for t in exporters if t["health"] != "up"
        ]
        return None if down else exporters

    exporters = wait_until(exporters_if_all_up, 90, "every exporter scraped", interval=3)
    jobs = {t["labels"]["job"] for t in exporters}
    assert jobs == {"prometheus", "node", "nginx", "redis", "mtail", "blackbox"}
    assert {t["labels"]["instance"] for t in exporters} == {container}


def test_prometheus_scrapes_each_daphne_process(host, container):
    if not host.service("prometheus").is_running:
        pytest.skip("this host is not in the monitoring group")
    ports = daphne_ports(host)
    name = container
    daphne = {
        t["labels"]["instance"]: t
        for t in targets(host)
        if t["labels"]["job"] == "chatstack-daphne"
    }
    assert sorted(daphne) == sorted(f"{name}:{port}" for port in ports)
    assert {t["scrapeUrl"] for t in daphne.values()} == {
        f"http://127.0.0.1:{port}/metrics" for port in ports
    }
    assert fetch(host, f"http://127.0.0.1:{ports[0]}/metrics")[0] == 200
    wait_until(
        lambda: all(
            t["health"] == "up" for t in targets(host) if t["labels"]["job"] == "chatstack-daphne"
        ),
        60,
        "Prometheus scrapes every Daphne process",
        interval=3,
    )


def test_app_metrics_move_when_a_client_connects_and_sends(host, site):
    user = site.session()
    user.signup(f"t{uuid.uuid4().hex[:12]}")
    before = app_metrics(host)

    async def connect_and_send():
        async with user.websocket(f"metrics{uuid.uuid4().hex[:8]}") as socket:
            await next_of_type(socket, "history")
            during = app_metrics(host)
            await socket.send(json.dumps({"message": "counted"}))
            await next_of_type(socket, "message")
            await socket.send(json.dumps({"message": ""}))
            await next_of_type(socket, "error")
            return during

    during = asyncio.run(connect_and_send())
    after = app_metrics(host)
    connections = "chatstack_websocket_connections"
    assert during[connections] == before[connections] + 1
    assert after[connections] == before[connections]
    for name in ["chatstack_messages_accepted_total", "chatstack_broadcast_latency_seconds_count"]:
        assert after[name] == before[name] + 1, name
    empty = 'chatstack_messages_rejected_total{reason="empty"}'
    assert after[empty] == before[empty] + 1


def test_prometheus_loads_the_alert_rules(host):
    if not host.service("prometheus").is_running:
        pytest.skip("this host is not in the monitoring group")
    check = host.run("promtool check rules /etc/prometheus/chatstack-rules.yml")
    assert check.rc == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in check.stdout
    groups = prometheus_api(host, "/api/v1/rules")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == RULES
    assert all(rule["health"] == "ok" for rule in loaded.values()), loaded


# Promtool's unit tests of the rules, kept with the role (one file per subject).
RULE_TESTS = Path(__file__).resolve().parents[2] / "roles/prometheus/files/rule-tests"


@pytest.mark.parametrize("tests", sorted(path.name for path in RULE_TESTS.glob("*.yml")))
def test_alert_rules_fire_on_what_they_describe(host, tests):
    """An alert that fires on the wrong thing, too early or never pages no one or the wrong one."""
    if not host.service("prometheus").is_running:
        pytest.skip("this host is not in the monitoring group")
    path = host.check_output("mktemp --suffix=.yml")
    try:
        host.check_output("printf '%%s' %s > %s", (RULE_TESTS / tests).read_text(), path)
        result = host.run(f"promtool test rules {path}")
        assert result.rc == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout
    finally:
        host.run(f"rm -f {path}")


ALERTMANAGER = "http://127.0.0.1:9093"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
# A webhook receiver: each POST body (one JSON document) becomes a line of the file.
WEBHOOK_SINK = """
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as deliveries:
            deliveries.write(body.strip() + b"\\n")
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""
# Beyond the rule's for:, a scrape and an evaluation (15 s each), the group's
# wait or interval (molecule inventory: 5 s, 30 s) and a slow shared CPU.
DELIVERY_BOUND = 120


def needs_alertmanager(host) -> None:
    if not host.service("prometheus-alertmanager").is_running:
        pytest.skip("this host is not in the monitoring group")


def test_alertmanager_listens_on_loopback_only(host):
    """Alertmanager's API can silence every alert: nobody outside the host may reach it."""
    needs_alertmanager(host)
    assert listen_address(host, 9093) == "127.0.0.1"
    # A single instance: no cluster port (9094) that others could gossip with.
    assert host.check_output("ss -Hlntu 'sport = :9094'") == ""
    status, body = fetch(host, ALERTMANAGER + "/api/v2/status")
    assert status == 200
    assert json.loads(body)["cluster"]["status"] == "disabled"


@pytest.fixture
def webhook_sink(host):
    """The path of the file that collects what the molecule inventory's webhook URL
    receives, while a sink listens there."""
    needs_alertmanager(host)
    config = yaml.safe_load(host.file(ALERTMANAGER_CONFIG).content_string)
    (url,) = [hook["url"] for hook in config["receivers"][0]["webhook_configs"]]
    port = int(url.split(":")[2].split("/")[0])
    script = host.check_output("mktemp --suffix=.py")
    deliveries = host.check_output("mktemp")
    unit = f"chatstack-test-webhook-{uuid.uuid4().hex[:8]}"
    host.check_output("printf '%%s' %s > %s", WEBHOOK_SINK, script)
    host.check_output(f"systemd-run --unit={unit} --collect python3 {script} {port} {deliveries}")
    try:
        wait_until(
            lambda: host.socket(f"tcp://127.0.0.1:{port}").is_listening, 10, "the sink listens"
        )
        yield deliveries
    finally:
        host.run(f"systemctl stop {unit}")
        host.run(f"rm -f {script} {deliveries}")


def delivered_alerts(host, deliveries: str) -> list[dict]:
    """Every alert of every webhook delivery so far."""
    bodies = host.file(deliveries).content_string.splitlines()
    return [alert for body in bodies for alert in json.loads(body)["alerts"]]


HANDSHAKE = """
import socket, sys
request = (
    "GET /ws/chat/handshake/ HTTP/1.1\\r\\nHost: localhost\\r\\n"
    "Upgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n"
    "Origin: https://localhost\\r\\n\\r\\n"
)
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as raw:
    raw.sendall(request.encode())
    print(raw.recv(12).decode())
"""


def handshake(host, port: str) -> int | None:
    """The status of a WebSocket handshake (without a session) straight to a Daphne
    port; None while nothing answers there."""
    result = host.run("python3 -c %s %s", HANDSHAKE, port)
    return int(result.stdout.split()[1]) if result.rc == 0 else None


def test_stopped_redis_reaches_the_webhook(host, container, site, webhook_sink, record_time):
    """With Redis stopped, chat messages are not delivered: the operator's webhook must
    hear of it (RedisDown, naming this host) within the rule's for: plus a bound. Once
    Redis is back, chat works again at once, with no restart of the app."""
    rules = prometheus_api(host, "/api/v1/rules")["groups"]
    (rule,) = [r for group in rules for r in group["rules"] if r["name"] == "RedisDown"]

    def redis_down_delivered():
        return [
            alert
            for alert in delivered_alerts(host, webhook_sink)
            if alert["status"] == "firing"
            and alert["labels"]["alertname"] == "RedisDown"
            and alert["labels"]["instance"] == container
        ]

    stopped = time.monotonic()
    host.check_output("systemctl stop redis-server")
    try:
        # The first delivery; a slow poll may also see the group's next one.
        alert = wait_until(
            redis_down_delivered,
            rule["duration"] + DELIVERY_BOUND,
            "RedisDown delivered to the webhook",
            interval=2,
        )[0]
        record_time("Redis stopped until RedisDown reached the webhook", time.monotonic() - stopped)
    finally:
        host.check_output("systemctl start redis-server")
        wait_until(
            lambda: re.search(r"^redis_up 1$", fetch(host, REDIS_EXPORTER)[1], re.M),
            30,
            "Redis answers its exporter again",
        )
    # The app's pooled Redis connections died with the server; the first request on
    # each must retry on a fresh one, so no poll here: one try each.
    statuses = {port: handshake(host, port) for port in daphne_ports(host)}
    assert set(statuses.values()) == {403}, f"handshakes failed after Redis returned: {statuses}"
    (user,) = accounts_made_on(host, site, [f"t{uuid.uuid4().hex[:12]}"])
    echoed = post_once(user, f"redis{uuid.uuid4().hex[:8]}", "after the outage")
    assert echoed["message"] == "after the outage", "a post failed after Redis returned"
    assert alert["annotations"]["summary"] == f"Redis on {container} is unreachable"


def test_a_down_host_holds_back_its_unit_alerts(host):
    """An operator whose host is down hears that once, not once per stopped service."""
    needs_alertmanager(host)
    instance = f"gone-{uuid.uuid4().hex[:8]}"
    amtool = f"amtool --alertmanager.url={ALERTMANAGER} alert add --end=$(date -d +2min -Is)"
    host.check_output(f"{amtool} alertname=TargetDown job=node instance={instance}")
    host.check_output(f"{amtool} alertname=UnitDown name=redis-server.service instance={instance}")
    elsewhere = f"{instance}-up"
    host.check_output(f"{amtool} alertname=UnitDown name=redis-server.service instance={elsewhere}")

    def states():
        query = "?filter=alertname%3D%22UnitDown%22"
        status, body = fetch(host, ALERTMANAGER + "/api/v2/alerts" + query)
        assert status == 200
        found = {
            alert["labels"]["instance"]: alert["status"]["state"] for alert in json.loads(body)
        }
        return found if {instance, elsewhere} <= set(found) else None

    found = wait_until(states, 10, "both UnitDown alerts known")
    assert found[instance] == "suppressed", "a down host's unit alert was sent as well"
    assert found[elsewhere] == "active", "a unit alert of a host that is up was held back"


def test_alertmanager_accepts_an_smtp_relay(host, container):
    """An operator who sets an SMTP relay gets a configuration Alertmanager loads, with
    the password never printed."""
    needs_alertmanager(host)
    path = host.check_output("mktemp --suffix=.yml")
    password = f"secret-{uuid.uuid4().hex}"
    try:
        result = render_role_template(
            container,
            "alertmanager",
            "alertmanager.yml.j2",
            path,
            alertmanager_smtp_smarthost="smtp.example.org:587",
            alertmanager_smtp_from="alerts@example.org",
            alertmanager_email_to=["ops@example.org", "oncall@example.org"],
            alertmanager_smtp_auth_username="alerts",
            alertmanager_smtp_auth_password=password,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert password not in result.stdout + result.stderr
        check = host.run(f"amtool check-config {path}")
        assert check.rc == 0, check.stdout + check.stderr
        assert password not in check.stdout + check.stderr
        config = yaml.safe_load(host.file(path).content_string)
        assert config["global"]["smtp_smarthost"] == "smtp.example.org:587"
        assert config["receivers"][0]["email_configs"][0]["to"] == (
            "ops@example.org, oncall@example.org"
        )
    finally:
        host.run(f"rm -f {path}")


def journal_lines(host, unit: str, marker: str) -> list[str]:
    return [
        line
        for line in host.check_output(
            f"journalctl -u '{unit}' --since -2min --no-pager -o cat"
        ).splitlines()
        if marker in line
    ]


THROUGH_NGINX = (
    "import http.client, ssl, sys\n"
    "c = http.client.HTTPSConnection('127.0.0.1', 443, context=ssl._create_unverified_context())\n"
    "c.request('GET', sys.argv[1],\n"
    "          headers={'X-Forwarded-For': '203.0.113.99', 'Host': 'localhost'})\n"
    "print(c.getresponse().status)\n"
)


def through_nginx(host, path: str) -> int:
    """GET path over HTTPS from inside the host, claiming to come from 203.0.113.99."""
    return int(host.check_output("python3 -c %s %s", THROUGH_NGINX, path))


def wait_for_journal_lines(host, unit: str, marker: str) -> list[str]:
    """The unit's journal lines with marker, once there are any (at most 10 s)."""
    lines = wait_until(lambda: journal_lines(host, unit, marker), 10, f"{unit} logs {marker}")
    print(lines)
    return lines


def test_uwsgi_access_log_has_the_real_client_address(host):
    marker = uuid.uuid4().hex
    # The client claims another address; Nginx passes on its own view, 127.0.0.1.
    assert through_nginx(host, f"/healthz?{marker}") == 200
    lines = wait_for_journal_lines(host, "chatstack-uwsgi.service", marker)
    assert len(lines) == 1
    assert "] 127.0.0.1 () {" in lines[0]
    assert "203.0.113.99" not in lines[0]


WEBSOCKET_THROUGH_NGINX = """
import socket, ssl, sys
request = (
    f"GET /ws/chat/{sys.argv[1]}/ HTTP/1.1\\r\\nHost: localhost\\r\\n"
    "Upgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n"
    "Origin: https://localhost\\r\\nX-Forwarded-For: 203.0.113.99\\r\\n\\r\\n"
)
context = ssl._create_unverified_context()
raw = socket.create_connection(("127.0.0.1", 443))
with context.wrap_socket(raw, server_hostname="localhost") as tls:
    tls.sendall(request.encode())
    print(tls.recv(12).decode())
"""


def test_daphne_access_log_has_the_real_client_address(host):
    marker = uuid.uuid4().hex
    # A WebSocket handshake (refused: no session) that claims another address.
    host.check_output("python3 -c %s %s", WEBSOCKET_THROUGH_NGINX, marker)
    lines = wait_for_journal_lines(host, "chatstack-daphne@*", marker)
    assert lines, "no Daphne access log line in the journal"
    assert all(line.startswith("127.0.0.1:") for line in lines)
    assert any(f'"WSCONNECTING /ws/chat/{marker}/"' in line for line in lines)


def test_nginx_logs_are_rotated(host):
    assert host.package("logrotate").is_installed
    assert host.service("logrotate.timer").is_enabled
    host.check_output("logrotate --force /etc/logrotate.d/nginx")
    assert host.file("/var/log/nginx/access.log.1").exists
    # Nginx reopened its logs (the rule's postrotate): new requests land in the new file.
    marker = uuid.uuid4().hex
    through_nginx(host, f"/healthz?{marker}")
    wait_until(
        lambda: marker in host.file("/var/log/nginx/access.log").content_string,
        10,
        "Nginx logs to the new access.log after rotation",
    )
