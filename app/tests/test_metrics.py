import ipaddress
import json

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from prometheus_client.parser import text_string_to_metric_families

from chatstack.asgi import application
from chatstack.chat import consumers
from chatstack.chat.limits import Refusal
from chatstack.chat.metrics import Rejection, Revocation

from .conftest import _session_cookie
from .metricsutil import value
from .test_settings import load_settings
from .wsutil import joined, receive

SCRAPER = ("127.0.0.1", 48123)


async def scrape(
    client=SCRAPER, method="GET", headers=(), path="/metrics", host=b"10.0.0.5:7001"
) -> tuple:
    """An HTTP request to the ASGI application as daphne sends it; (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        # Scrapers address a daphne process by IP, which is not in ALLOWED_HOSTS.
        "headers": [(b"host", host), *headers],
        "client": client,
        "server": ("10.0.0.5", 7001),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=3)
    assert start["type"] == "http.response.start"
    body = await communicator.receive_output(timeout=3)
    assert body["type"] == "http.response.body"
    assert not body.get("more_body")
    await communicator.wait(timeout=3)
    return start["status"], dict(start["headers"]), body["body"]


def rejections() -> dict[str, float]:
    return {
        reason: value("chatstack_messages_rejected_total", reason=reason) for reason in Rejection
    }


def broadcasts() -> tuple[float, float]:
    """Accepted messages and broadcast latency observations so far."""
    return (
        value("chatstack_messages_accepted_total"),
        value("chatstack_broadcast_latency_seconds_count"),
    )


@pytest.mark.parametrize("client", [SCRAPER, ("::1", 48123)])
async def test_allowed_address_reads_every_metric(client):
    status, headers, body = await scrape(client=client)

    assert status == 200
    assert headers[b"Content-Type"].startswith(b"text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["chatstack_websocket_connections"].type == "gauge"
    assert families["chatstack_messages_accepted"].type == "counter"
    assert families["chatstack_broadcast_latency_seconds"].type == "histogram"
    rejected = families["chatstack_messages_rejected"]
    assert rejected.type == "counter"
    # Every reason is exported before its first rejection.
    reasons = {s.labels["reason"] for s in rejected.samples if s.name.endswith("_total")}
    assert reasons == {reason.value for reason in Rejection}
    for family, enum in [
        ("chatstack_connections_refused", Refusal),
        ("chatstack_connections_revoked", Revocation),
    ]:
        samples = families[family].samples
        assert {s.labels["reason"] for s in samples if s.name.endswith("_total")} == set(enum)
    # prometheus_client's default collectors stay.
    assert "process_cpu_seconds" in families
    assert "python_info" in families


@pytest.mark.parametrize(
    ("client", "headers"),
    [
        (("192.0.2.10", 5000), ()),
        (("2001:db8::10", 5000), ()),
        (("::ffff:192.0.2.10", 5000), ()),
        # Not an address: a UNIX socket.
        (None, ()),
        # daphne --proxy-headers took the client address from the request itself.
        (SCRAPER, [(b"x-forwarded-for", b"127.0.0.1")]),
        (SCRAPER, [(b"x-real-ip", b"127.0.0.1")]),
        (SCRAPER, [(b"X-Forwarded-For", b"")]),
    ],
)
async def test_other_clients_and_proxied_requests_are_refused(client, headers):
    status, _, body = await scrape(client=client, headers=headers)
    assert status == 403
    assert b"chatstack_" not in body


async def test_allowed_networks_come_from_the_setting(settings):
    settings.CHATSTACK_METRICS_ALLOWED_NETWORKS = (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("2001:db8:1::/48"),
    )
    for client in ["10.20.3.4", "::ffff:10.20.3.4", "2001:db8:1::9"]:
        assert (await scrape(client=(client, 5000)))[0] == 200, client
    for client in ["127.0.0.1", "10.21.0.1", "2001:db8:2::9"]:
        assert (await scrape(client=(client, 5000)))[0] == 403, client


@pytest.mark.parametrize("method", ["POST", "HEAD", "DELETE"])
async def test_only_get_is_served(method):
    status, headers, body = await scrape(method=method)
    assert status == 405
    assert headers[b"allow"] == b"GET"
    assert b"chatstack_" not in body


def test_wsgi_side_has_no_metrics(client):
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize(("path", "status"), [("/", 302), ("/metrics/", 404)])
async def test_other_http_paths_still_reach_django(path, status):
    assert (await scrape(path=path, host=b"testserver"))[0] == status
    # Django refuses hosts not in ALLOWED_HOSTS, which /metrics does not look at.
    assert (await scrape(path=path))[0] == 400


@pytest.mark.django_db(transaction=True)
async def test_connections_gauge_follows_opens_and_closes(ws, alice, bob):
    before = value("chatstack_websocket_connections")
    first = await ws(user=alice, room="general")
    await joined(first)
    assert value("chatstack_websocket_connections") == before + 1
    second = await ws(user=bob, room="general")
    await joined(second)
    assert value("chatstack_websocket_connections") == before + 2
    # A refused handshake is no open connection.
    await ws(user=None, expect=False)
    assert value("chatstack_websocket_connections") == before + 2

    await first.disconnect()
    assert value("chatstack_websocket_connections") == before + 1
    await second.disconnect()
    assert value("chatstack_websocket_connections") == before


@pytest.mark.django_db(transaction=True)
async def test_connections_gauge_drops_when_a_consumer_crashes(
    redis_client, alice, monkeypatch, settings
):
    async def broken_history(*args):
        raise RuntimeError("database is down")

    monkeypatch.setattr(consumers, "load_history", broken_history)
    # A crashed consumer with a Redis layer lingers until its blocking receive
    # (5 s) returns; the in-memory layer lets it go at once.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    before = value("chatstack_websocket_connections")
    # Not the ws fixture: it would disconnect the crashed consumer and re-raise its error.
    chat = WebsocketCommunicator(
        application,
        "/ws/chat/lobby/",
        headers=[
            (b"host", b"testserver"),
            (b"origin", b"http://testserver"),
            (b"cookie", await sync_to_async(_session_cookie)(alice)),
        ],
    )
    assert (await chat.connect(timeout=5))[0]
    # The consumer dies after accept(), so its disconnect() never runs.
    with pytest.raises(RuntimeError, match="database is down"):
        await chat.wait(timeout=5)
    assert value("chatstack_websocket_connections") == before


@pytest.mark.django_db(transaction=True)
async def test_accepted_message_is_counted_and_its_broadcast_timed(ws, alice):
    accepted, observed = broadcasts()
    latency_sum = value("chatstack_broadcast_latency_seconds_sum")
    rejected = rejections()
    chat = await ws(user=alice)
    await joined(chat)

    await chat.send_json_to({"message": "hello"})
    # The sender's own copy comes after its receive() has finished.
    await receive(chat, "message")

    assert broadcasts() == (accepted + 1, observed + 1)
    assert value("chatstack_broadcast_latency_seconds_sum") > latency_sum
    assert rejections() == rejected


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (json.dumps({"message": "x" * 2001}), Rejection.TOO_LONG),
        ("x" * 100_000, Rejection.TOO_LONG),
        ('{"message": " \\n "}', Rejection.EMPTY),
        ("not json", Rejection.INVALID_JSON),
        ('{"text": "hi"}', Rejection.INVALID_FRAME),
        ('{"message": "nul\\u0000byte"}', Rejection.NUL_CHARACTER),
        (b'{"message": "binary"}', Rejection.BINARY_FRAME),
    ],
)
@pytest.mark.django_db(transaction=True)
async def test_bad_frame_is_counted_under_its_reason(ws, alice, frame, reason):
    chat = await ws(user=alice)
    await joined(chat)
    expected = rejections()
    expected[reason] += 1
    accepted, observed = broadcasts()

    if isinstance(frame, bytes):
        await chat.send_to(bytes_data=frame)
    else:
        await chat.send_to(text_data=frame)

    assert (await chat.receive_json_from())["type"] == "error"
    assert rejections() == expected
    assert broadcasts() == (accepted, observed)


@pytest.mark.django_db(transaction=True)
async def test_rate_limited_message_is_counted(ws, alice, settings):
    settings.CHATSTACK_RATE_LIMIT_COUNT = 1
    settings.CHATSTACK_RATE_LIMIT_SECONDS = 60
    chat = await ws(user=alice)
    await joined(chat)
    expected = rejections()
    expected[Rejection.RATE_LIMITED] += 1
    accepted, observed = broadcasts()

    await chat.send_json_to({"message": "first"})
    await receive(chat, "message")
    await chat.send_json_to({"message": "second"})

    assert "Slow down" in (await chat.receive_json_from())["error"]
    assert rejections() == expected
    assert broadcasts() == (accepted + 1, observed + 1)


@pytest.mark.django_db(transaction=True)
async def test_failed_broadcast_is_counted_as_not_sent(ws, alice, monkeypatch):
    chat = await ws(user=alice)
    await joined(chat)
    expected = rejections()
    expected[Rejection.NOT_SENT] += 1
    accepted, observed = broadcasts()

    async def broken_group_send(*args):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(get_channel_layer(), "group_send", broken_group_send)
    await chat.send_json_to({"message": "hello"})

    assert (await chat.receive_json_from())["error"] == "Message not sent, try again."
    assert rejections() == expected
    assert broadcasts() == (accepted, observed)


def test_allowed_networks_default_to_loopback(env):
    assert load_settings()["CHATSTACK_METRICS_ALLOWED_NETWORKS"] == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )


def test_allowed_networks_accept_addresses_and_cidrs_of_both_families(env):
    env.setenv("CHATSTACK_METRICS_ALLOWED_NETWORKS", " 10.0.0.0/8, 2001:db8::/32 ,192.0.2.7,")
    assert load_settings()["CHATSTACK_METRICS_ALLOWED_NETWORKS"] == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    )


@pytest.mark.parametrize(
    "networks",
    [
        "10.0.0.0/33",
        "10.0.0.1/8",  # host bits set: 10.0.0.0/8 or 10.0.0.1/32?
        "127.0.0.1,prometheus.internal",
        "2001:db8::/129",
        "10.0.0.0/8;192.0.2.0/24",
        ",",
    ],
)
def test_bad_allowed_networks_are_rejected_with_the_variable_name(env, networks):
    env.setenv("CHATSTACK_METRICS_ALLOWED_NETWORKS", networks)
    with pytest.raises(ImproperlyConfigured, match="CHATSTACK_METRICS_ALLOWED_NETWORKS"):
        load_settings()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("client", "headers", "body"),
    [
        (SCRAPER, (), {"status": "ok", "database": "ok", "channel_layer": "ok"}),
        (("192.0.2.10", 5000), (), {"status": "ok"}),
        (SCRAPER, [(b"x-forwarded-for", b"127.0.0.1")], {"status": "ok"}),
    ],
)
async def test_daphne_healthz_is_full_only_for_the_monitoring_networks(
    redis_client, client, headers, body
):
    """The deploy checks each Daphne process on loopback: there it must be the full check."""
    status, _, answer = await scrape(
        client=client, headers=headers, path="/healthz", host=b"testserver"
    )
    assert status == 200
    assert json.loads(answer) == body
