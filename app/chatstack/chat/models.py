import hashlib
import secrets
from datetime import UTC, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Message(models.Model):
    room = models.CharField(_("room"), max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chat_messages",
        verbose_name=_("author"),
    )
    text = models.TextField(_("text"))
    created = models.DateTimeField(_("sent"), default=timezone.now)
    # The client's id for the message, if it sent one: a retry with the same
    # one finds this row instead of storing the message again. NULL, not "",
    # for none: only messages that have one are in the unique constraint.
    cid = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        # History is "latest N of a room by id" (and pages older than an id)
        # and the lobby groups by room; `prune` finds the messages older than
        # the retention by date.
        indexes = [
            models.Index(fields=["room", "id"], name="chat_message_room_id"),
            models.Index(fields=["created"], name="chat_message_created"),
        ]
        # Exactly once for as long as the message is kept, whichever process
        # or app host the retry reaches.
        constraints = [
            models.UniqueConstraint(
                fields=["room", "author", "cid"],
                condition=models.Q(cid__isnull=False),
                name="chat_message_room_author_cid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room}: {self.text[:40]}"

    def as_frame(self) -> dict:
        """The wire representation; the author must already be loaded."""
        frame = {
            "type": "message",
            "id": self.id,
            "user": self.author.get_username(),
            "message": self.text,
            "ts": self.created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
        if self.cid is not None:
            frame["cid"] = self.cid
        return frame


def _digest(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


class InviteQuerySet(models.QuerySet):
    def usable(self):
        return self.filter(used__isnull=True, expires__gt=timezone.now())

    def with_code(self, code: str):
        return self.filter(code_digest=_digest(code))


class Invite(models.Model):
    """A single-use, expiring code that lets one person sign up (CHATSTACK_SIGNUP=invite)."""

    # Only a digest: a copy of the database hands out no accounts.
    code_digest = models.CharField(_("code digest"), max_length=64, unique=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    expires = models.DateTimeField(_("expires"))
    # Set when redeemed; kept if the account is deleted, so the code stays spent.
    used = models.DateTimeField(_("used"), null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("used by"),
    )

    objects = InviteQuerySet.as_manager()

    class Meta:
        verbose_name = _("invite")
        verbose_name_plural = _("invites")

    def __str__(self) -> str:
        return f"invite {self.code_digest[:8]} (until {self.expires:%Y-%m-%d %H:%M})"

    @classmethod
    def issue(cls, valid_for: timedelta) -> str:
        """Stores a new invite; returns its code, which is shown only now."""
        code = secrets.token_urlsafe(12)
        cls.objects.create(code_digest=_digest(code), expires=timezone.now() + valid_for)
        return code

    @classmethod
    def redeem(cls, code: str, user) -> bool:
        """Spends the code for `user`; False if it is unknown, spent or expired."""
        # One UPDATE: two sign-ups racing for one code cannot both spend it.
        return bool(cls.objects.usable().with_code(code).update(used=timezone.now(), used_by=user))


class Profile(models.Model):
    """What a person chose for their account, applied wherever they log in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chat_profile",
        verbose_name=_("user"),
    )
    # A code of settings.LANGUAGES; empty until the person picks one.
    language = models.CharField(_("language"), max_length=16, blank=True)

    class Meta:
        verbose_name = _("profile")
        verbose_name_plural = _("profiles")

    def __str__(self) -> str:
        return str(self.user)
