"""Room names: one definition shared by URLs, forms and the WebSocket consumer."""

import hashlib
import re

# Unicode letters and digits (\w), '-' and '_'.
ROOM_NAME_PATTERN = r"[\w-]{1,64}"
_ROOM_NAME_RE = re.compile(ROOM_NAME_PATTERN)


def is_valid_room_name(name: str) -> bool:
    return _ROOM_NAME_RE.fullmatch(name) is not None


def group_name(room: str) -> str:
    # Channel-layer group names must be short ASCII, room names may be any script.
    return "chat." + hashlib.sha256(room.encode()).hexdigest()


class RoomNameConverter:
    regex = ROOM_NAME_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value
