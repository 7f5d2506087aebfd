"""`/metrics` on the HTTP side of the ASGI application, for Prometheus to scrape.

Served in front of Django, so each daphne process reports its own numbers to a
scraper that connects to its address:port directly: no Host check (scrapers use
the address), no session or database. uWSGI (WSGI) has no such route.
"""

import ipaddress

from django.conf import settings
from prometheus_client import make_asgi_app

METRICS_PATH = "/metrics"
# daphne runs with --proxy-headers, so with either of these the client address in the
# scope may be whatever the request claims. Scrapers connect directly and never send
# them; requests through Nginx always carry them (to uWSGI too).
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"x-real-ip"})
# The same headers as Django's request.META names them.
FORWARDING_META = frozenset(
    "HTTP_" + name.decode().upper().replace("-", "_") for name in FORWARDING_HEADERS
)


def address_allowed(client: str | None) -> bool:
    """Whether `client` is an address in CHATSTACK_METRICS_ALLOWED_NETWORKS."""
    if not client:
        # A UNIX socket or file descriptor: no address to check.
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        address = address.ipv4_mapped
    return any(address in network for network in settings.CHATSTACK_METRICS_ALLOWED_NETWORKS)


def scrape_allowed(scope: dict) -> bool:
    """Whether the request comes straight from an address in CHATSTACK_METRICS_ALLOWED_NETWORKS."""
    if any(name.lower() in FORWARDING_HEADERS for name, _ in scope.get("headers", ())):
        return False
    client = scope.get("client")
    return address_allowed(client[0] if client else None)


def request_allowed(request) -> bool:
    """scrape_allowed() for a Django request, served by Daphne or by uWSGI behind Nginx."""
    if FORWARDING_META & request.META.keys():
        return False
    return address_allowed(request.META.get("REMOTE_ADDR"))


async def _respond(send, status: int, body: bytes, headers: tuple = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsEndpoint:
    """ASGI middleware: answers GET /metrics for allowed scrapers, passes everything else on."""

    def __init__(self, inner) -> None:
        self.inner = inner
        # The default registry: this process's chat metrics plus the process and
        # Python collectors prometheus_client registers there.
        self.exposition = make_asgi_app()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != METRICS_PATH:
            await self.inner(scope, receive, send)
        elif not scrape_allowed(scope):
            # Checked before the method, so refused clients learn nothing more.
            await _respond(send, 403, b"Forbidden\n")
        elif scope["method"] != "GET":
            await _respond(send, 405, b"Method not allowed\n", ((b"allow", b"GET"),))
        else:
            await self.exposition(scope, receive, send)
