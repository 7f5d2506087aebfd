from django import forms
from django.core.validators import RegexValidator

from .rooms import ROOM_NAME_PATTERN


class RoomForm(forms.Form):
    room = forms.CharField(
        label="Room name",
        max_length=64,
        validators=[
            RegexValidator(
                rf"\A{ROOM_NAME_PATTERN}\Z",
                "Use up to 64 letters, digits, hyphens and underscores.",
            )
        ],
    )
