"""Page load: keep-alive HTTPS GETs of one path, as many browsers reloading it."""

import asyncio
import re
import time
from collections import Counter

from load import Target, counted, percentiles, pooled, run_workers

STATIC_LINK = re.compile(r'href="(/static/[^"]+\.css)"')


def static_path(target: Target) -> str:
    """The content-hashed stylesheet the login page links to."""
    with target.opener().open(target.base_url + "/accounts/login/", timeout=30) as response:
        return STATIC_LINK.search(response.read().decode()).group(1)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Reads one HTTP/1.1 response; returns its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    return status, headers.get("connection") != "close"


async def _page_connection(target: Target, path: str, cookie: str, deadline: float, stats):
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
        f"Cookie: {cookie}\r\nUser-Agent: chatstack-bench\r\n\r\n"
    ).encode()
    tls = target.tls()
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port, ssl=tls), 10
            )
        except (OSError, TimeoutError) as error:
            stats["errors"][type(error).__name__] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            keep_alive = True
            while keep_alive and time.monotonic() < deadline:
                started = time.monotonic()
                writer.write(request)
                status, keep_alive = await asyncio.wait_for(_read_response(reader), 10)
                stats["latencies"].append((time.monotonic() - started) * 1000)
                if status != 200:
                    stats["errors"][f"HTTP {status}"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            stats["errors"][type(error).__name__] += 1
        finally:
            writer.close()


async def _pages(target: Target, path: str, cookie: str, connections: int, seconds: float):
    stats = {"latencies": [], "errors": Counter()}
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(_page_connection(target, path, cookie, deadline, stats) for _ in range(connections))
    )
    return {"latencies": stats["latencies"], "errors": dict(stats["errors"])}


def pages(target: Target, path: str, connections: int, seconds: float, workers: int) -> dict:
    """Keep-alive GETs of one path from `connections` connections per worker for `seconds`."""
    jobs = [(target, path, target.cookies[0], connections, seconds)] * workers
    collect, _ = run_workers(_pages, jobs, timeout=seconds + 60)
    outcome = collect()
    latencies = pooled(outcome, "latencies")
    return {
        "path": path,
        "connections": connections * workers,
        "seconds": seconds,
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "latency_ms": percentiles(latencies),
        "errors": dict(counted(outcome, "errors")),
    }
