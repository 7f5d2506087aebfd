from django.contrib import admin

from .models import Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["created", "room", "author", "text"]
    list_filter = ["room"]
    search_fields = ["text", "room", "author__username"]
    list_select_related = ["author"]
    raw_id_fields = ["author"]
    date_hierarchy = "created"
