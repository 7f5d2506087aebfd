"""Five hosts act as one site: chat and history across app hosts, services
reachable only by the hosts that use them, and rolling deploys under traffic."""

import asyncio
import json
import threading
import time
import uuid

import pytest
import testinfra
from chatbrowser import ARTIFACTS
from chatclient import next_of_type
from conftest import APP_HOSTS, APP_TLS_NAME, CA_CERTIFICATE, DB, GROUPS, LB, REDIS, address
from hostmetrics import dashboard_queries, metric_names, scraped_metric_names
from netns import connect_outcome, exchange, relay
from playbook import ROOT, app_copy, mark_login_page, recap, run_playbook
from testhost import podman
from waiting import wait_until
from websockets.exceptions import ConnectionClosed, WebSocketException


def new_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def alice_and_bob(site):
    users = []
    for _ in range(2):
        user = site.session()
        user.signup(new_name())
        users.append(user)
    return users


@pytest.fixture
def pinned(tmp_path):
    """A unix socket per app host, relayed from the load balancer to its Daphne on
    7001; websocket_via(..., **app_tls) speaks TLS through it, as Nginx does."""
    with (
        relay(LB, address(APP_HOSTS[0]), 7001, tmp_path / "app1.sock") as app1,
        relay(LB, address(APP_HOSTS[1]), 7001, tmp_path / "app2.sock") as app2,
    ):
        yield app1, app2


def test_users_on_different_app_hosts_chat_in_one_room(alice_and_bob, pinned, app_tls):
    alice, bob = alice_and_bob
    room = new_name()

    async def chat():
        async with (
            alice.websocket_via(pinned[0], room, **app_tls) as on_app1,
            bob.websocket_via(pinned[1], room, **app_tls) as on_app2,
        ):
            await next_of_type(on_app1, "history")
            await next_of_type(on_app2, "history")
            await on_app1.send(json.dumps({"message": "from app1"}))
            received = await next_of_type(on_app2, "message")
            assert (received["user"], received["message"]) == (alice.username, "from app1")
            await on_app2.send(json.dumps({"message": "from app2"}))
            # Alice first sees her own message come back, then Bob's.
            assert (await next_of_type(on_app1, "message"))["message"] == "from app1"
            received = await next_of_type(on_app1, "message")
            assert (received["user"], received["message"]) == (bob.username, "from app2")

    asyncio.run(chat())


def test_history_written_through_one_app_host_is_read_through_the_other(
    alice_and_bob, pinned, app_tls
):
    alice, bob = alice_and_bob
    room = new_name()

    async def post_then_read():
        async with alice.websocket_via(pinned[0], room, **app_tls) as on_app1:
            await next_of_type(on_app1, "history")
            await on_app1.send(json.dumps({"message": "kept in PostgreSQL"}))
            await next_of_type(on_app1, "message")
        async with bob.websocket_via(pinned[1], room, **app_tls) as on_app2:
            return (await next_of_type(on_app2, "history"))["messages"]

    history = asyncio.run(post_then_read())
    assert [(m["user"], m["message"]) for m in history] == [(alice.username, "kept in PostgreSQL")]


@pytest.mark.parametrize(
    ("source", "target", "port", "reachable"),
    [
        # The app hosts use Redis and PostgreSQL; the load balancer does not.
        (APP_HOSTS[0], REDIS, 6379, True),
        (APP_HOSTS[1], DB, 5432, True),
        (LB, REDIS, 6379, False),
        (LB, DB, 5432, False),
        # Daphne and uWSGI admit the load balancer only.
        (LB, APP_HOSTS[0], 7001, True),
        (LB, APP_HOSTS[1], 8001, True),
        (REDIS, APP_HOSTS[0], 7001, False),
        (DB, APP_HOSTS[1], 8001, False),
    ],
)
def test_services_admit_only_the_hosts_that_use_them(source, target, port, reachable):
    outcome = connect_outcome(source, address(target), port)
    print(f"{source} -> {target}:{port}: {outcome}")
    assert (outcome == "connected") == reachable, outcome


def test_app_hosts_share_the_database_and_the_session_key():
    settings = [
        podman(
            "exec",
            host,
            "grep",
            "-E",
            "^CHATSTACK_(DB_ENGINE|DB_HOST|SECRET_KEY)=",
            "/etc/chatstack/chatstack.env",
        )
        for host in APP_HOSTS
    ]
    assert settings[0] == settings[1]
    assert f"CHATSTACK_DB_HOST='{address(DB)}'" in settings[0]
    assert "CHATSTACK_DB_ENGINE='postgresql'" in settings[0]


class PageLoad:
    """Requests a page through the load balancer, over and over, in a thread."""

    def __init__(self, site, path: str, max_seconds: float):
        self.site, self.path, self.max_seconds = site, path, max_seconds
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        browser = self.site.session()
        deadline = time.monotonic() + self.max_seconds
        # A steady ~20 requests/s: enough to hit every moment of a restart, not
        # so many that the load itself slows the deploy on a small machine.
        while not self.stop.wait(0.05) and time.monotonic() < deadline:
            try:
                self.statuses.append(browser.request(self.path)[0])
            except OSError as error:
                self.errors.append(repr(error))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


async def chat_through_deploy(site, users, room, deploy):
    """Users chat through the load balancer while `deploy` runs in a thread.

    Each connection dropped by a restart is reopened, as the browser client does;
    afterwards every user posts once and every message must reach everyone.
    Returns how many reconnects there were.
    """
    connections = {}
    reconnects = 0

    async def connect(user):
        socket = await user.websocket(room)
        await next_of_type(socket, "history")
        connections[user.username] = socket

    async def keep_connected(user, done: asyncio.Event):
        nonlocal reconnects
        while not done.is_set():
            try:
                # Reading (and dropping presence frames) also answers Daphne's pings.
                await asyncio.wait_for(connections[user.username].recv(), timeout=1)
                continue
            except TimeoutError:
                continue
            except ConnectionClosed:
                pass
            for attempt in range(30):
                try:
                    await connect(user)
                except (OSError, TimeoutError, WebSocketException):
                    await asyncio.sleep(0.5 + attempt * 0.1)
                else:
                    reconnects += 1
                    break

    for user in users:
        await connect(user)
    done = asyncio.Event()
    keepers = [asyncio.create_task(keep_connected(user, done)) for user in users]
    result = await asyncio.to_thread(deploy)
    done.set()
    await asyncio.gather(*keepers)

    for user in users:
        await connections[user.username].send(json.dumps({"message": f"after {user.username}"}))
    expected = {f"after {user.username}" for user in users}
    for user in users:
        seen = set()
        while seen != expected:
            seen.add((await next_of_type(connections[user.username], "message"))["message"])
    for socket in connections.values():
        await socket.close()
    return result, reconnects


def test_rolling_deploy_fails_no_request_and_keeps_chat_going(site, tmp_path):
    # Unique per run, so that every run deploys a release the hosts do not have.
    marker = f"rolled-out-{uuid.uuid4().hex[:8]}"
    source = app_copy(tmp_path, "marked", mark_login_page(marker))
    extra = {
        "app_source_dir": str(source),
        "app_lock_file": str(ROOT / "app/requirements.lock"),
        "app_wheelhouse_dir": str(tmp_path / "wheelhouse"),
    }
    users = []
    for _ in range(4):
        user = site.session()
        user.signup(new_name())
        users.append(user)

    def deploy():
        return run_playbook(GROUPS, tmp_path, "-e", json.dumps(extra), playbook="deploy.yml")

    started = time.monotonic()
    with PageLoad(site, "/accounts/login/", max_seconds=900) as load:
        (result, seconds), reconnects = asyncio.run(
            chat_through_deploy(site, users, new_name(), deploy)
        )
    print(
        f"rolling deploy of {len(APP_HOSTS)} app hosts: {time.monotonic() - started:.1f}s"
        f" (ansible {seconds:.1f}s), {len(load.statuses)} page requests, {reconnects} reconnects"
    )

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "cluster-rolling-deploy.log").write_text(result.stdout)
    assert result.returncode == 0, result.stdout
    for host in APP_HOSTS:
        assert f"without {host}" in result.stdout, "the host was not drained first"
        assert recap(result.stdout, host)["failed"] == 0
    assert load.errors == []
    assert set(load.statuses) == {200}
    # Traffic ran throughout, not just before or after.
    assert len(load.statuses) > 20
    # Both hosts restarted under the users, who came back.
    assert reconnects >= 1
    pool = podman("exec", LB, "cat", "/etc/nginx/chatstack-upstreams.conf")
    assert " down;" not in pool, "a host was left out of the pool"
    pages = {site.session().request("/accounts/login/")[2].count(marker) for _ in range(8)}
    assert pages == {1}, "every app host serves the new release"


def app_python(host: str, code: str) -> str:
    """Runs Python in the app's virtualenv on an app host, with the app's settings
    in its environment (libpq's PGSSL* included); returns what it printed."""
    return podman(
        "exec",
        host,
        "sh",
        "-c",
        "set -a; . /etc/chatstack/chatstack.env;"
        ' exec /srv/chatstack/current/venv/bin/python -c "$0"',
        code,
    )


def client_outcome(host: str, client: str, target: str) -> str:
    """What `client` (Python, {address} the target's) ends in, run on an app host."""
    code = (
        "import os\n"
        f"try:\n    {client.format(address=address(target), ca=CA_CERTIFICATE)}\n"
        "except Exception as error:\n    print(type(error).__name__, error)\n"
        "else:\n    print('connected')"
    )
    outcome = app_python(host, code)
    print(f"{host} -> {target}: {outcome}")
    return outcome


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("import redis; redis.Redis(host={address!r}, ssl=True, ssl_ca_certs={ca!r},"
         " socket_timeout=5).ping()", "Authentication"),
        # verify-full over TLS, from the app's environment (PGSSLMODE, PGSSLROOTCERT).
        ("import psycopg; psycopg.connect(host={address!r}, dbname='chatstack',"
         " user='chatstack', connect_timeout=5)", "password"),
    ],
    ids=["redis", "postgresql"],
)  # fmt: skip
def test_reachable_services_still_require_the_password(client, expected):
    outcome = client_outcome(APP_HOSTS[0], client, REDIS if "redis" in client else DB)
    assert expected in outcome, "a client that verified the server got in without a password"


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        # The app's own URL and password, without TLS.
        ("import redis; url = os.environ['CHATSTACK_REDIS_URLS'].split(',')[0];"
         " redis.Redis.from_url(url.replace('rediss:', 'redis:').split('?')[0],"
         " socket_timeout=5).ping()", "ConnectionError"),
        ("import psycopg; psycopg.connect(host={address!r}, dbname='chatstack', user='chatstack',"
         " password=os.environ['CHATSTACK_DB_PASSWORD'], sslmode='disable', connect_timeout=5)",
         "no encryption"),
    ],
    ids=["redis", "postgresql"],
)  # fmt: skip
def test_plaintext_clients_are_refused_even_with_the_password(client, expected):
    outcome = client_outcome(APP_HOSTS[0], client, REDIS if "redis" in client else DB)
    assert expected in outcome, "the app's password and data could cross the network in clear"


def uwsgi_request(variables: dict[str, str]) -> bytes:
    """A request in the uwsgi protocol, as Nginx's uwsgi_pass sends it."""
    body = b"".join(
        len(item).to_bytes(2, "little") + item
        for pair in variables.items()
        for item in (pair[0].encode(), pair[1].encode())
    )
    return b"\0" + len(body).to_bytes(2, "little") + b"\0" + body


# /healthz of an app server, as the load balancer would ask for it (the
# molecule inventory's ALLOWED_HOSTS has localhost).
HEALTHZ = {
    "daphne": (7001, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    "uwsgi": (
        8001,
        uwsgi_request(
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/healthz",
                "REQUEST_URI": "/healthz",
                "QUERY_STRING": "",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_NAME": "localhost",
                "SERVER_PORT": "443",
                "HTTP_HOST": "localhost",
                "HTTP_X_FORWARDED_PROTO": "https",
            }
        ),
    ),
}


@pytest.mark.parametrize("server", HEALTHZ)
def test_app_servers_answer_the_load_balancer_over_verified_tls_only(server, ca_pem, tmp_path):
    port, request = HEALTHZ[server]
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(ca_pem)
    target = address(APP_HOSTS[0])
    secure = exchange(LB, target, port, request, str(ca_file), APP_TLS_NAME)
    plain = exchange(LB, target, port, request)
    print(f"{LB} -> {server} on {APP_HOSTS[0]}: TLS {secure!r}, plaintext {plain!r}")
    assert secure.startswith("HTTP/1.1 200"), "Nginx could not reach the app over TLS"
    assert not plain.startswith("HTTP/"), "session cookies could cross the network in clear"


def prometheus_targets() -> list[dict]:
    code = (
        "import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
        "'http://127.0.0.1:9090/api/v1/targets', timeout=10))['data']['activeTargets']))"
    )
    return json.loads(podman("exec", LB, "python3", "-c", code))


def test_prometheus_on_the_lb_scrapes_every_host_of_the_cluster():
    expected = {
        ("prometheus", LB),
        *(("node", host) for host in [LB, *APP_HOSTS, REDIS, DB]),
        ("nginx", LB),
        ("mtail", LB),
        # The probes of the site, named after the load balancer they reach.
        ("blackbox", LB),
        ("redis", REDIS),
        ("postgres", DB),
        *(("chatstack-daphne", host) for host in APP_HOSTS),
    }

    def targets_if_all_up() -> list[dict] | None:
        targets = prometheus_targets()
        down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
        return None if down else targets

    targets = wait_until(targets_if_all_up, 120, "every target scraped", interval=3)
    # Instances of Daphne targets name the port too ("host:7001").
    scraped = {(t["labels"]["job"], t["labels"]["instance"].split(":")[0]) for t in targets}
    assert scraped == expected


def test_the_dashboards_postgresql_panels_have_their_metrics():
    """An operator who imports the Grafana dashboard sees empty PostgreSQL panels if it
    names the exporter's metrics wrongly (the other panels are checked in `default`)."""
    names = {name for name in metric_names(dashboard_queries()) if name.startswith("pg_")}
    assert names, "the dashboard has PostgreSQL panels"
    lb = testinfra.get_host(f"podman://{LB}")
    wait_until(
        lambda: names <= scraped_metric_names(lb),
        60,
        f"Prometheus has every PostgreSQL metric the dashboard queries, {sorted(names)}",
        interval=3,
    )
