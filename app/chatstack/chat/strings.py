"""Every user-visible string of the room page's script, in one translatable place.

The room view renders them into the page with json_script ("chat-strings");
room.js reads them from there and never spells a word itself. Placeholders
are Python's %(name)s, filled in by room.js.
"""

from django.utils.translation import gettext_lazy as _

ROOM_STRINGS = {
    "connecting": _("connecting…"),
    "connected": _("connected"),
    "reconnecting": _("reconnecting…"),
    "disconnected": _("disconnected"),
    "pending": _("waiting to be sent"),
    "roomStart": _("This is the start of the room."),
    "newMessages": _("New messages"),
    "jumpToLatest": _("Jump to latest"),
    "unreadTitle": _("(%(count)s) %(title)s"),
    "charactersLeft": _("Characters left: %(count)s"),
    # Read out by screen readers for each new message of someone else, and the
    # body of its desktop notification.
    "announce": _("%(user)s: %(message)s"),
    "notificationsOn": _("Turn on notifications"),
    "notificationsOff": _("Turn off notifications"),
    "notificationsBlocked": _("Notifications are blocked in this browser"),
}
