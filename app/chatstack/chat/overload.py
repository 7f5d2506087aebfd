"""Saying "busy" instead of lagging: the bounds on posts a process holds and on how
far behind its event loop may run, and how a consumer sees that its client
stopped taking what it is sent."""

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterator

from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings

from . import metrics


class Backlog:
    """Posts this process accepted from its sockets and has not yet stored and broadcast.

    They all queue for one database thread (and, on SQLite, one writer lock),
    so each one waiting adds its store and fan-out to the wait of those behind
    it: past a bound, refusing at once beats storing late.
    """

    def __init__(self) -> None:
        self.size = 0

    @contextlib.contextmanager
    def place(self) -> Iterator[bool]:
        """Takes a place for one post until the block ends; yields False if the backlog is full."""
        if self.size >= settings.CHATSTACK_POST_BACKLOG:
            yield False
            return
        self.size += 1
        metrics.POST_BACKLOG.set(self.size)
        try:
            yield True
        finally:
            self.size -= 1
            metrics.POST_BACKLOG.set(self.size)


# One per Daphne process: its consumers share the database thread the bound protects.
BACKLOG = Backlog()


class LoopLag:
    """How late this process's event loop runs what is due, smoothed over about a second.

    The backlog counts only posts already read. A process short of CPU falls
    behind before that: every frame of every socket, the room's deliveries
    among them, waits its turn in the loop (and unread ones in the kernel's
    buffers), so all of its rooms lag together, seconds behind at four times
    what the host can carry (issue 18's benchmark). Refusing posts while the
    loop is late costs a frame where accepting costs a store and a delivery
    to every member, so the loop catches up. Smoothed, so that one stall (a
    garbage collection, a burst of joins) refuses nothing.
    """

    TICK_SECONDS = 0.1
    # Weight of the newest tick: a lateness held for ~1 s (10 ticks) is ~90 % counted.
    WEIGHT = 0.2

    def __init__(self) -> None:
        self.seconds = 0.0
        self.task: asyncio.Task | None = None

    def behind(self) -> bool:
        """Whether the loop runs later than the bound; starts watching on the first call."""
        if self.task is None or self.task.get_loop() is not asyncio.get_running_loop():
            # A new loop (tests run one per test) starts from a loop on time.
            self.seconds = 0.0
            self.task = asyncio.get_running_loop().create_task(self.watch())
        return self.seconds * 1000 > settings.CHATSTACK_BUSY_LAG_MS

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.TICK_SECONDS
            await asyncio.sleep(self.TICK_SECONDS)
            late = loop.time() - due
            self.seconds += self.WEIGHT * (late - self.seconds)
            metrics.LOOP_LAG.set(self.seconds)


# One per Daphne process: its sockets share the one event loop.
LOOP_LAG = LoopLag()


class Backpressure:
    """Whether the client has stopped taking what it is sent, and since when.

    An ASGI send never blocks: Daphne hands each frame to Twisted, whose
    transport buffers without bound when the client (or Nginx, on its behalf)
    stops reading. The transport's only signal is Twisted's producer
    interface: once the kernel's socket buffer is full and more than
    `bufferSize` (64 KiB) waits in the process, it pauses its producer, and
    resumes it when the buffer has drained. Paused means the backlog is
    already large and growing with every frame sent; paused for seconds
    means the client is not catching up.

    A transport has one producer, and Daphne's has one already: the HTTP
    channel the WebSocket was upgraded from, which stops reading the socket
    while it is paused. It keeps being told, through this one.
    """

    def __init__(self, previous=None) -> None:
        self.paused_since: float | None = None
        self.previous = previous

    # Twisted's IPushProducer.
    def pauseProducing(self) -> None:
        if self.paused_since is None:
            self.paused_since = time.monotonic()
        if self.previous is not None:
            self.previous.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused_since = None
        if self.previous is not None:
            self.previous.resumeProducing()

    def stopProducing(self) -> None:
        self.paused_since = None
        if self.previous is not None:
            self.previous.stopProducing()

    def stalled_for(self) -> float:
        """Seconds since the client last had nothing of ours waiting beyond the kernel's buffer."""
        return 0.0 if self.paused_since is None else time.monotonic() - self.paused_since


def daphne_protocol(send) -> WebSocketProtocol | None:
    """The Daphne protocol behind an ASGI `send`, None under any other server.

    Daphne's send is `partial(server.handle_reply, protocol)`: the one place
    this relies on Daphne's internals rather than its interface.
    """
    if isinstance(send, functools.partial) and send.args:
        protocol = send.args[0]
        if isinstance(protocol, WebSocketProtocol):
            return protocol
    return None


class BackpressureMiddleware:
    """Under Daphne, puts the client's Backpressure in a WebSocket's scope["backpressure"]."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        protocol = daphne_protocol(send)
        transport = getattr(protocol, "transport", None)
        # A pull producer is never paused, so it could not be told through a push producer.
        if transport is not None and (transport.producer is None or transport.streamingProducer):
            backpressure = Backpressure(transport.producer)
            # Autobahn's public hooks onto the transport; one that streams is paused and resumed.
            protocol.unregisterProducer()
            protocol.registerProducer(backpressure, True)
            scope = {**scope, "backpressure": backpressure}
        return await self.inner(scope, receive, send)
