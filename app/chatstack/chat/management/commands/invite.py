from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatstack.chat.models import Invite


class Command(BaseCommand):
    help = (
        "Creates single-use sign-up codes and prints one per line; each lets one"
        " person sign up while CHATSTACK_SIGNUP is 'invite'."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=1, help="How many codes (default 1).")
        parser.add_argument(
            "--days", type=int, default=7, help="Days until the codes expire (default 7)."
        )

    def handle(self, *args, count: int, days: int, **options) -> None:
        if count < 1 or days < 1:
            raise CommandError("--count and --days must be at least 1")
        if settings.CHATSTACK_SIGNUP != "invite":
            self.stderr.write(
                f"Sign-up is {settings.CHATSTACK_SIGNUP!r}: these codes work only"
                " while it is 'invite' (app_signup: invite)."
            )
        for _ in range(count):
            self.stdout.write(Invite.issue(timedelta(days=days)))
