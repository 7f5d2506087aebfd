"""Reading a host's HTTP endpoints and the chat's metrics from inside the host."""

import json
import re
from pathlib import Path

from testhost import daphne_units

PROMETHEUS_FILES = Path(__file__).resolve().parents[2] / "roles/prometheus"
# What an operator looks at: the console page and the Grafana dashboard.
CONSOLE = PROMETHEUS_FILES / "templates/chatstack-console.html.j2"
DASHBOARD = PROMETHEUS_FILES / "files/chatstack-grafana.json"

FETCH = """
import http.client, json, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
connection.request("GET", url.path + ("?" + url.query if url.query else ""))
response = connection.getresponse()
print(response.status)
print(response.read().decode())
"""


def fetch(host, url: str) -> tuple[int, str]:
    """GET an http:// URL from inside the host, redirects not followed: (status, body)."""
    status, _, body = host.check_output("python3 -c %s %s", FETCH, url).partition("\n")
    return int(status), body


PROMETHEUS = "http://127.0.0.1:9090"


def prometheus_api(host, path: str):
    """The data of a Prometheus API answer (path from /api/v1/...)."""
    status, body = fetch(host, PROMETHEUS + path)
    assert status == 200
    return json.loads(body)["data"]


def metric_names(queries: str) -> set[str]:
    """The names of the metrics the site's exporters and the app export, in PromQL text."""
    return set(re.findall(r"\b(?:chatstack|probe|redis|apt|node|pg)_[A-Za-z0-9_]+", queries))


def dashboard_queries() -> str:
    """Every query of the Grafana dashboard, one per line."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return "\n".join(target["expr"] for panel in panels for target in panel.get("targets", []))


def scraped_metric_names(host) -> set[str]:
    """Every metric name the Prometheus on `host` has."""
    return set(prometheus_api(host, "/api/v1/label/__name__/values"))


def listen_address(host, port: int) -> str:
    """The one address a service listens on for port (IPv6 in brackets)."""
    lines = host.check_output(f"ss -Hltn 'sport = :{port}'").splitlines()
    assert len(lines) == 1, lines
    return lines[0].split()[3].rsplit(":", 1)[0]


def daphne_ports(host) -> list[str]:
    return sorted(re.search(r"@(\d+)\.service$", unit).group(1) for unit in daphne_units(host))


def daphne_metrics(host) -> dict[str, dict[str, float]]:
    """The chat's own metrics of each Daphne process of the host, by port."""
    metrics = {}
    for port in daphne_ports(host):
        status, body = fetch(host, f"http://127.0.0.1:{port}/metrics")
        assert status == 200, body
        metrics[port] = {
            name: float(value)
            for name, value in re.findall(r"^(chatstack_[^ ]+) ([0-9.e+-]+)$", body, re.M)
        }
    return metrics


def app_metrics(host) -> dict[str, float]:
    """The chat's own metrics, summed over every Daphne process of the host."""
    totals: dict[str, float] = {}
    for process in daphne_metrics(host).values():
        for name, value in process.items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


# prometheus-redis-exporter's port (exporters_redis_port).
REDIS_EXPORTER = "http://127.0.0.1:9121/metrics"


def redis_memory(host) -> dict[str, float]:
    """Redis' used_memory and used_memory_dataset (bytes) and its keys, as Prometheus sees them."""
    status, body = fetch(host, REDIS_EXPORTER)
    assert status == 200, body

    def total(pattern: str) -> float:
        return sum(float(value) for value in re.findall(pattern, body, re.M))

    return {
        "used_memory": total(r"^redis_memory_used_bytes ([0-9.e+-]+)$"),
        "used_memory_dataset": total(r"^redis_memory_used_dataset_bytes ([0-9.e+-]+)$"),
        "keys": total(r"^redis_db_keys\{[^}]*\} ([0-9.e+-]+)$"),
    }
