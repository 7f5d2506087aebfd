"""Prometheus metrics of the chat, per daphne process (served by chatstack.metrics_endpoint).

Each daphne process has its own default registry; Prometheus scrapes every
process and sums across them. The metric names are a contract with dashboards
and alerts: rename only together with them.
"""

from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram

from .limits import Refusal


class Rejection(StrEnum):
    """Why a client frame was not posted: one reason per error frame the protocol sends."""

    # The account's message budget (over all its sockets) is spent.
    RATE_LIMITED = "rate_limited"
    BINARY_FRAME = "binary_frame"
    INVALID_JSON = "invalid_json"
    # Valid JSON, but not {"message": "<string>"}.
    INVALID_FRAME = "invalid_frame"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NUL_CHARACTER = "nul_character"
    # Storing or broadcasting failed ("Message not sent, try again.").
    NOT_SENT = "not_sent"
    # The account's budget of `history before` pages is spent.
    HISTORY_LIMITED = "history_limited"
    # Reading older messages (or checking that budget) failed.
    HISTORY_FAILED = "history_failed"
    # The process's backlog of posts was full, or the post waited too long for
    # the database (chat.overload): "The server is busy, try again in a moment."
    BUSY = "busy"


class Revocation(StrEnum):
    """Why an open socket was closed because its account or session no longer holds."""

    LOGGED_OUT = "logged_out"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 (a reason, not a password)
    DEACTIVATED = "deactivated"
    DELETED = "deleted"
    # Found by the heartbeat's check (the notice was lost, or the session expired).
    SESSION_ENDED = "session_ended"


def _by_reason(name: str, documentation: str, reasons: type[StrEnum]) -> dict:
    counter = Counter(name, documentation, ["reason"])
    # Created up front, so every reason is exported at 0 before its first count
    # (rate() and alerts need the series to exist); a KeyError flags an unknown reason.
    return {reason: counter.labels(reason=reason) for reason in reasons}


WEBSOCKET_CONNECTIONS = Gauge(
    "chatstack_websocket_connections",
    "Chat WebSocket connections currently open in this process.",
)
MESSAGES_ACCEPTED = Counter(
    "chatstack_messages_accepted",
    "Chat messages stored and broadcast to their room.",
)
MESSAGES_RECOVERED = Counter(
    "chatstack_messages_recovered",
    "Messages a connection was sent from the database because the channel layer"
    " lost or reordered them.",
)
MESSAGES_REJECTED = _by_reason(
    "chatstack_messages_rejected",
    "Client frames answered with an error frame instead of being posted, by reason.",
    Rejection,
)
CONNECTIONS_REFUSED = _by_reason(
    "chatstack_connections_refused",
    "WebSockets closed right after their handshake because their account is at a limit.",
    Refusal,
)
CONNECTIONS_REVOKED = _by_reason(
    "chatstack_connections_revoked",
    "Open WebSockets closed because their session or account was ended.",
    Revocation,
)
POST_BACKLOG = Gauge(
    "chatstack_post_backlog",
    "Posts accepted from sockets and not yet stored and broadcast, in this process.",
)
LOOP_LAG = Gauge(
    "chatstack_event_loop_lag_seconds",
    "How late this process's event loop runs what is due, smoothed over about a second;"
    " past CHATSTACK_BUSY_LAG_MS posts are refused as busy.",
)
CONNECTIONS_TOO_SLOW = Counter(
    "chatstack_connections_too_slow",
    "Open WebSockets closed because their client stopped taking what it was sent.",
)
BROADCAST_LATENCY = Histogram(
    "chatstack_broadcast_latency_seconds",
    "Time from a chat message arriving at the consumer to its group_send completing"
    " (includes storing it).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
