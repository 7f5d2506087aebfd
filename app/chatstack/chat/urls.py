from django.urls import path, register_converter

from . import views
from .rooms import RoomNameConverter

register_converter(RoomNameConverter, "room")

app_name = "chat"
urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("<room:room_name>/", views.room, name="room"),
]
