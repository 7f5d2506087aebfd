"""The site probed as its users reach it, what Nginx refuses, and the console page."""

import re
import urllib.parse

import pytest
from hostmetrics import (
    CONSOLE,
    PROMETHEUS,
    daphne_ports,
    dashboard_queries,
    fetch,
    metric_names,
    prometheus_api,
    scraped_metric_names,
)
from waiting import wait_until

BLACKBOX = "http://127.0.0.1:9115"
MTAIL = "http://127.0.0.1:3903/metrics"
# The molecule inventory's public name (nginx_server_name) and its self-signed
# certificate, which the probes trust instead of the system's CAs.
SITE = "https://localhost"
PROBES = {
    "healthz": ("chatstack_healthz_pinned", SITE + "/healthz"),
    "websocket": ("chatstack_websocket_pinned", SITE + "/ws/chat/probe/"),
}
# A scrape (15 s), a probe's timeout (10 s) and a slow shared CPU.
SCRAPE_BOUND = 60


@pytest.fixture(autouse=True)
def monitoring_host(host):
    if not host.service("prometheus-blackbox-exporter").is_running:
        pytest.skip("this host is not in the monitoring group")


def probe(host, name: str) -> dict[str, float]:
    """What the blackbox exporter answers Prometheus for one probe now."""
    module, target = PROBES[name]
    query = urllib.parse.urlencode({"module": module, "target": target})
    status, body = fetch(host, f"{BLACKBOX}/probe?{query}")
    assert status == 200, body
    return {
        name: float(value) for name, value in re.findall(r"^([a-z_]+) ([0-9.e+-]+)$", body, re.M)
    }


def scraped_probes(host, container: str) -> dict[str, float]:
    """probe_success of this host's probes as Prometheus last scraped them, by probe."""
    query = urllib.parse.quote(f'probe_success{{job="blackbox",instance="{container}"}}')
    result = prometheus_api(host, f"/api/v1/query?query={query}")["result"]
    return {series["metric"]["probe"]: float(series["value"][1]) for series in result}


def wait_for_scraped(host, container: str, success: int) -> None:
    """Until Prometheus has scraped probe_success == success for both probes."""
    wait_until(
        lambda: scraped_probes(host, container) == dict.fromkeys(PROBES, success),
        SCRAPE_BOUND,
        f"Prometheus scraped probe_success {success} for both probes",
        interval=3,
    )


def test_probes_succeed_on_a_working_site(host, container):
    """Prometheus says the site answers when a user would find it answering."""
    for name in PROBES:
        assert probe(host, name)["probe_success"] == 1, f"the {name} probe fails"
    wait_for_scraped(host, container, 1)


def test_probes_fail_while_nginx_is_stopped(host, container):
    """With Nginx stopped no user reaches the site: both probes must say so, and Prometheus
    must see it, or ProbeFailed never pages anyone."""
    host.check_output("systemctl stop nginx")
    try:
        for name in PROBES:
            assert probe(host, name)["probe_success"] == 0, f"the {name} probe passes"
        wait_for_scraped(host, container, 0)
    finally:
        host.check_output("systemctl start nginx")
        wait_until(
            lambda: all(probe(host, name)["probe_success"] == 1 for name in PROBES),
            30,
            "both probes pass again once Nginx is back",
        )


def test_websocket_probe_reaches_daphne(host):
    """The WebSocket probe is Daphne's answer to an upgrade through Nginx (a refusal, for
    want of a session), not Nginx's: with every Daphne stopped, chat is down for users,
    so the probe fails while pages still answer."""
    answered = probe(host, "websocket")
    assert answered["probe_success"] == 1
    assert answered["probe_http_status_code"] == 403
    # Stopped units drop out of systemd's list: name them before.
    units = " ".join(f"chatstack-daphne@{port}" for port in daphne_ports(host))
    host.check_output(f"systemctl stop {units}")
    try:
        stopped = probe(host, "websocket")
        assert stopped["probe_success"] == 0
        # Nginx's maintenance page for a backend that is down.
        assert stopped["probe_http_status_code"] == 502
        assert probe(host, "healthz")["probe_success"] == 1
    finally:
        host.check_output(f"systemctl start {units}")
        wait_until(
            lambda: probe(host, "websocket")["probe_success"] == 1,
            60,
            "the WebSocket probe passes again once Daphne is back",
        )


def test_certificate_expiry_is_the_served_certificates(host):
    """The expiry CertificateExpiresSoon watches is the one of the certificate users get."""
    not_after = host.check_output(
        "openssl s_client -connect 127.0.0.1:443 -servername localhost </dev/null 2>/dev/null"
        " | openssl x509 -noout -enddate"
    ).removeprefix("notAfter=")
    served = int(host.check_output("date --date=%s +%%s", not_after))
    assert probe(host, "healthz")["probe_ssl_earliest_cert_expiry"] == served


# POSTs to a path through Nginx from inside the host, trusting only the site's
# certificate; prints each answer's status.
POSTS = """
import http.client, ssl, sys
context = ssl.create_default_context(cafile="/etc/ssl/certs/chatstack.crt")
for _ in range(int(sys.argv[2])):
    connection = http.client.HTTPSConnection("localhost", 443, context=context)
    connection.request("POST", sys.argv[1], body=b"", headers={"Host": "localhost"})
    print(connection.getresponse().status)
    connection.close()
"""


def refusals(host, location: str) -> float:
    """Nginx's own 429s at location so far, as mtail counted them from the access log."""
    status, body = fetch(host, MTAIL)
    assert status == 200, body
    pattern = (
        r"^chatstack_nginx_refusals_total\{"
        rf'location="{re.escape(location)}",prog="[^"]+",refused_by="nginx"\}} ([0-9.e+]+)$'
    )
    found = re.search(pattern, body, re.M)
    return float(found.group(1)) if found else 0.0


def test_admin_login_refusals_are_counted(host):
    """An operator sees how often Nginx refuses admin logins (password guessing), in
    Prometheus, without reading logs."""
    before = refusals(host, "/admin/login/")
    # More than the zone's burst (nginx_login_burst, 10) within a second.
    statuses = host.check_output("python3 -c %s %s 20", POSTS, "/admin/login/").split()
    refused = statuses.count("429")
    assert refused > 0, statuses
    counted = wait_until(
        lambda: (after := refusals(host, "/admin/login/")) >= before + refused and after,
        10,
        "mtail counted the refusals",
    )
    assert counted == before + refused


def test_console_page_shows_the_site(host, container):
    """The page an operator opens through the SSH tunnel shows the site's numbers."""
    # Both probes scraped, so the page has them to show.
    wait_for_scraped(host, container, 1)
    status, page = fetch(host, PROMETHEUS + "/consoles/chatstack.html")
    assert status == 200, page
    print(re.sub(r"<[^>]+>", " ", page))
    assert re.search(r'<td class="connections">\d+</td>', page)
    assert re.search(r'<td class="messages">\d+\.\d\d</td>', page)
    assert re.search(r'<td class="probe-healthz">ok</td>', page)
    assert re.search(r'<td class="probe-websocket">ok</td>', page)
    assert re.search(r'<td class="certificate">\d+d ', page)
    assert re.search(r'<td class="redis-memory">[0-9.]+%</td>', page)


def test_every_console_query_names_metrics_prometheus_has(host):
    """A console row whose metric was renamed or is never scraped shows "-" forever, and
    nobody notices. (The refusal test above makes Nginx's refusal counter exist.)"""
    names = metric_names(CONSOLE.read_text())
    wait_until(
        lambda: names <= scraped_metric_names(host),
        SCRAPE_BOUND,
        f"Prometheus has every metric the console page queries, {sorted(names)}",
        interval=3,
    )


def test_every_dashboard_query_names_metrics_prometheus_has(host):
    """An operator who imports the Grafana dashboard sees empty panels for every metric it
    names wrongly. PostgreSQL's are checked in the cluster scenario: no db host here."""
    names = {name for name in metric_names(dashboard_queries()) if not name.startswith("pg_")}
    wait_until(
        lambda: names <= scraped_metric_names(host),
        SCRAPE_BOUND,
        f"Prometheus has every metric the dashboard queries, {sorted(names)}",
        interval=3,
    )
