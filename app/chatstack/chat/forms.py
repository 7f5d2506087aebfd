from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _

from .models import Invite
from .rooms import ROOM_NAME_PATTERN


class RoomForm(forms.Form):
    room = forms.CharField(
        label=_("Room name"),
        max_length=64,
        validators=[
            RegexValidator(
                rf"\A{ROOM_NAME_PATTERN}\Z",
                _("Use up to 64 letters, digits, hyphens and underscores."),
            )
        ],
    )


class InviteSignupForm(UserCreationForm):
    """Sign-up with a code from `chatstack-manage invite` (CHATSTACK_SIGNUP=invite)."""

    invite = forms.CharField(label=_("Invite code"), max_length=64, strip=True)

    error_messages = {
        **UserCreationForm.error_messages,
        "invalid_invite": _("This invite code is unknown, used or expired."),
    }

    def clean_invite(self) -> str:
        code = self.cleaned_data["invite"]
        if not Invite.objects.usable().with_code(code).exists():
            raise forms.ValidationError(
                self.error_messages["invalid_invite"], code="invalid_invite"
            )
        return code
