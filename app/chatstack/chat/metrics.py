"""Prometheus metrics of the chat, per daphne process (served by chatstack.metrics_endpoint).

Each daphne process has its own default registry; Prometheus scrapes every
process and sums across them. The metric names are a contract with dashboards
and alerts: rename only together with them.
"""

from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram


class Rejection(StrEnum):
    """Why a client frame was not posted: one reason per error frame the protocol sends."""

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
_messages_rejected = Counter(
    "chatstack_messages_rejected",
    "Client frames answered with an error frame instead of being posted, by reason.",
    ["reason"],
)
# Created up front, so every reason is exported at 0 before its first rejection
# (rate() and alerts need the series to exist); a KeyError flags an unknown reason.
MESSAGES_REJECTED = {reason: _messages_rejected.labels(reason=reason) for reason in Rejection}
BROADCAST_LATENCY = Histogram(
    "chatstack_broadcast_latency_seconds",
    "Time from a chat message arriving at the consumer to its group_send completing"
    " (includes storing it).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
