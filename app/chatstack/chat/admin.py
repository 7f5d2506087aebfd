from django.contrib import admin

from .models import Invite, Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["created", "room", "author", "text"]
    list_filter = ["room"]
    search_fields = ["text", "room", "author__username"]
    list_select_related = ["author"]
    raw_id_fields = ["author"]
    date_hierarchy = "created"


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    """Who used which invite; codes are made with `chatstack-manage invite` (shown only then)."""

    list_display = ["created", "expires", "used", "used_by"]
    list_select_related = ["used_by"]
    readonly_fields = ["code_digest", "created", "used", "used_by"]
    date_hierarchy = "created"

    def has_add_permission(self, request) -> bool:
        # A code typed here would be stored only as a digest, never to be seen again.
        return False
