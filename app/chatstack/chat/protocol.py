"""The WebSocket protocol's frames: what a client may send, and the words and close
codes the server answers with (app/README.md documents them)."""

import json
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from .limits import Refusal
from .metrics import Rejection, Revocation

# Close codes (daphne allows applications 1000 and 3000-4999), sent after an
# error frame that says the same in words. At a limit: the client may retry
# later (another of the account's sockets may close meanwhile).
CLOSE_LIMITED = 4029
# The session or account no longer holds: reconnecting needs a new login.
CLOSE_REVOKED = 4001
# The client did not take what it was sent (as HTTP 408): reconnecting catches
# up from the history.
CLOSE_TOO_SLOW = 4008
MAX_CID_LENGTH = 64
# Messages per `history before` page: at most, and when the client names none.
MAX_HISTORY_PAGE = 100
DEFAULT_HISTORY_PAGE = 50
# SQLite's and PostgreSQL's largest id; a larger `before` cannot even be queried.
MAX_MESSAGE_ID = 2**63 - 1


def refusal_message(refusal: Refusal) -> str:
    if refusal is Refusal.TOO_MANY_CONNECTIONS:
        return _(
            "Too many open chat windows for this account (at most %(count)d):"
            " close one, and this one connects again."
        ) % {"count": settings.CHATSTACK_ACCOUNT_MAX_CONNECTIONS}
    return _(
        "Too many rooms open at once for this account (at most %(count)d):"
        " leave one, and this one connects again."
    ) % {"count": settings.CHATSTACK_ACCOUNT_MAX_ROOMS}


def busy_message() -> str:
    return _("The server is busy, try again in a moment.")


def too_slow_message() -> str:
    return _("Your connection fell too far behind the room: reconnecting to catch up.")


def revocation_message(reason: Revocation) -> str:
    if reason is Revocation.LOGGED_OUT:
        return _("You logged out.")
    if reason is Revocation.PASSWORD_CHANGED:
        return _("Your password was changed: log in again.")
    if reason in (Revocation.DEACTIVATED, Revocation.DELETED):
        return _("Your account was closed by an administrator.")
    return _("Your session ended: log in again.")


class InvalidMessage(ValueError):
    """The client sent something that is not a postable chat message."""

    def __init__(self, error: str, reason: Rejection, cid: str | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        # The client's id for the message, when the frame was readable enough to name one.
        self.cid = cid


@dataclass(frozen=True)
class Post:
    text: str
    cid: str | None


@dataclass(frozen=True)
class HistoryRequest:
    before: int
    limit: int


def too_long_message(max_length: int) -> str:
    return _("Message is too long (at most %(count)d characters).") % {"count": max_length}


def parse_frame(raw: str | None, max_length: int) -> Post | HistoryRequest:
    if raw is None:
        # An error frame rather than close code 1003: daphne (autobahn) only lets
        # applications close with 1000 or 3000-4999.
        raise InvalidMessage(
            _("Binary frames are not supported; send JSON text."), Rejection.BINARY_FRAME
        )
    # Cheap bound before json.loads: JSON spends at most 12 characters
    # (a \\uXXXX surrogate pair) per character of text.
    if len(raw) > 12 * max_length + 64:
        raise InvalidMessage(too_long_message(max_length), Rejection.TOO_LONG)
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidMessage(_("Message is not valid JSON."), Rejection.INVALID_JSON) from None
    if isinstance(data, dict) and data.get("type") == "history":
        return parse_history_request(data)
    return parse_post(data, max_length)


def parse_post(data, max_length: int) -> Post:
    cid = data.get("cid") if isinstance(data, dict) else None
    if cid is not None and not (
        isinstance(cid, str) and 0 < len(cid) <= MAX_CID_LENGTH and cid.isprintable()
    ):
        raise InvalidMessage(
            _('"cid" must be 1 to %(count)d printable characters.') % {"count": MAX_CID_LENGTH},
            Rejection.INVALID_FRAME,
        )
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        raise InvalidMessage(
            _('Expected a JSON object like {"message": "text"}.'), Rejection.INVALID_FRAME, cid
        )
    text = data["message"]
    if not text.strip():
        raise InvalidMessage(_("Message is empty."), Rejection.EMPTY, cid)
    if len(text) > max_length:
        raise InvalidMessage(too_long_message(max_length), Rejection.TOO_LONG, cid)
    if "\x00" in text:
        # PostgreSQL cannot store NUL in text columns.
        raise InvalidMessage(_("Message contains a NUL character."), Rejection.NUL_CHARACTER, cid)
    return Post(text, cid)


def is_int_between(value, low: int, high: int) -> bool:
    # JSON's true and false are ints to Python.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_history_request(data: dict) -> HistoryRequest:
    before, limit = data.get("before"), data.get("limit", DEFAULT_HISTORY_PAGE)
    if not is_int_between(before, 1, MAX_MESSAGE_ID) or not is_int_between(
        limit, 1, MAX_HISTORY_PAGE
    ):
        raise InvalidMessage(
            _('Expected {"type": "history", "before": <message id>, "limit": <1 to %(count)d>}.')
            % {"count": MAX_HISTORY_PAGE},
            Rejection.INVALID_FRAME,
        )
    return HistoryRequest(before, limit)
