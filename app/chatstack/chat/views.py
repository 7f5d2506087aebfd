from django.conf import settings
from django.db.models import Max
from django.shortcuts import redirect, render

from .forms import RoomForm
from .models import Message
from .strings import ROOM_STRINGS

RECENT_ROOMS = 20


def lobby(request):
    form = RoomForm(request.GET if "room" in request.GET else None)
    if form.is_valid():
        return redirect("chat:room", room_name=form.cleaned_data["room"])
    recent_rooms = (
        Message.objects.values("room")
        .annotate(last_active=Max("created"))
        .order_by("-last_active")[:RECENT_ROOMS]
    )
    return render(request, "chat/lobby.html", {"form": form, "recent_rooms": recent_rooms})


def room(request, room_name):
    return render(
        request,
        "chat/room.html",
        {
            "room_name": room_name,
            "max_length": settings.CHATSTACK_MESSAGE_MAX_LENGTH,
            "chat_strings": ROOM_STRINGS,
        },
    )
