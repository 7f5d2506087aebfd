"""Load generators' shared client: what every one of them needs to act like browsers.

Every generator (pages.py, fanout.py, openloop.py, capacity.py) talks to one
base URL on the loopback (a bench container's published 443), trusts only that
container's own certificate, ignores proxy settings, and stops by itself: each
loop is bounded by a count and a deadline. Worker processes share the machine's
CLOCK_MONOTONIC, so a timestamp written into a message by one process is
comparable to the time another receives it.
"""

import asyncio
import http.cookiejar
import multiprocessing
import re
import resource
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# Accounts on a throwaway bench host.
PASSWORD = "bench horse battery 9"  # noqa: S105
# A sign-up hashes a password (about a second of CPU), so a few users share
# all connections; the app allows one user any number of sockets.
USERS = 4


@dataclass(frozen=True)
class Target:
    """One host as the load generator sees it; picklable for worker processes."""

    base_url: str
    certificate: str
    cookies: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.base_url).hostname

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.base_url).port

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.certificate)

    def opener(self, *handlers) -> urllib.request.OpenerDirector:
        return urllib.request.build_opener(
            # No proxy from the environment: the host is on this machine.
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=self.tls()),
            *handlers,
        )

    def cookie_for(self, index: int) -> str:
        """The session of connection `index`: the users take turns."""
        return self.cookies[index % len(self.cookies)]


def raise_open_files_limit() -> None:
    # Every socket is a file; 10,000 of them exceed the usual soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 2)}


# Accounts ----------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def sign_up(target: Target, username: str) -> str:
    """Signs up as a browser would (CSRF token, form post); returns the Cookie header."""
    cookies = http.cookiejar.CookieJar()
    opener = target.opener(urllib.request.HTTPCookieProcessor(cookies), _NoRedirect())
    url = target.base_url + "/accounts/signup/"
    with opener.open(url, timeout=30) as response:
        token = CSRF_INPUT.search(response.read().decode()).group(1)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password1": PASSWORD,
            "password2": PASSWORD,
        }
    ).encode()
    # https only: base_url is the bench container's published port.
    request = urllib.request.Request(url, data=form, headers={"Origin": target.base_url})  # noqa: S310
    try:
        opener.open(request, timeout=30)
    except urllib.error.HTTPError as error:
        # The redirect after a successful sign-up arrives as an "error" here.
        if error.code != 302:
            raise RuntimeError(f"sign-up of {username} failed: HTTP {error.code}") from None
    header = "; ".join(f"{cookie.name}={cookie.value}" for cookie in cookies)
    if "sessionid=" not in header:
        raise RuntimeError(f"sign-up of {username} did not log in")
    return header


def with_users(target: Target, prefix: str) -> Target:
    cookies = tuple(sign_up(target, f"{prefix}{index}") for index in range(USERS))
    return Target(target.base_url, target.certificate, cookies)


# Worker processes --------------------------------------------------------


def run_workers(coroutine, jobs: list[tuple], timeout: float, barrier_parties: int = 0):
    """Runs coroutine(*job) in one process per job, with the barrier last when there is one.

    Returns collect(), which waits for every worker's result, and the barrier
    of barrier_parties (the workers, plus the caller when it takes part in
    the phases, as capacity() does), if any.
    """
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    barrier = context.Barrier(barrier_parties) if barrier_parties else None
    processes = [
        context.Process(
            target=_worker,
            args=(coroutine, (*job, barrier) if barrier_parties else job, results),
            daemon=True,
        )
        for job in jobs
    ]
    for process in processes:
        process.start()

    def collect() -> list[dict]:
        collected = [results.get(timeout=timeout) for _ in processes]
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        return collected

    return collect, barrier


def _worker(coroutine, args: tuple, results) -> None:
    raise_open_files_limit()
    results.put(asyncio.run(coroutine(*args)))


def barrier_wait(barrier, timeout: float) -> asyncio.Future:
    return asyncio.to_thread(barrier.wait, timeout)


def split(items: list, parts: int) -> list[list]:
    return [items[index::parts] for index in range(parts)]


def pooled(outcome: list[dict], key: str) -> list:
    """The workers' lists under `key`, end to end."""
    return [value for result in outcome for value in result[key]]


def counted(outcome: list[dict], key: str) -> Counter:
    """The workers' counts under `key`, added up."""
    total = Counter()
    for result in outcome:
        total.update(result[key])
    return total
