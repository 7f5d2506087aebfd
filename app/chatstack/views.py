import asyncio
import logging
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import RedirectURLMixin
from django.db import connection, transaction
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django.views.generic import FormView

from .chat.forms import InviteSignupForm
from .chat.language import chosen_in, keep_choice
from .chat.layers import private_layer
from .chat.models import Invite
from .metrics_endpoint import request_allowed

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2


@method_decorator(login_not_required, name="dispatch")
class SignupView(RedirectURLMixin, FormView):
    """Sign-up as CHATSTACK_SIGNUP allows: for anyone, with an invite code, or not at all."""

    template_name = "registration/signup.html"
    next_page = "chat:lobby"

    def dispatch(self, request, *args, **kwargs):
        if settings.CHATSTACK_SIGNUP == "closed":
            return render(request, "registration/signup_closed.html", status=403)
        return super().dispatch(request, *args, **kwargs)

    def get_form_class(self):
        return InviteSignupForm if settings.CHATSTACK_SIGNUP == "invite" else UserCreationForm

    def form_valid(self, form):
        with transaction.atomic():
            user = form.save()
            if "invite" in form.cleaned_data and not Invite.redeem(
                form.cleaned_data["invite"], user
            ):
                # Another sign-up spent it since the form was checked.
                transaction.set_rollback(True)
                form.add_error("invite", form.error_messages["invalid_invite"])
                return self.form_invalid(form)
        # A visitor who switched language before signing up keeps that choice everywhere.
        keep_choice(user, chosen_in(self.request))
        login(self.request, user)
        return super().form_valid(form)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context[self.redirect_field_name] = self.get_redirect_url()
        return context


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check_channel_layer() -> None:
    async with private_layer() as layer, asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
        channel = await layer.new_channel()
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "health.ping", "token": token})
        received = await layer.receive(channel)
    if received.get("token") != token:
        raise RuntimeError("channel layer returned a different message")


async def _status(name: str, check) -> str:
    try:
        await check()
    except Exception:
        logger.warning("Health check failed: %s", name, exc_info=True)
        return "error"
    return "ok"


@login_not_required
@never_cache
@require_safe
async def healthz(request):
    """Whether this process can serve the chat: in full for monitoring, cheaply for anyone.

    The full answer checks the database and makes a channel-layer round trip;
    it is for the clients /metrics admits (the deploy's checks on loopback,
    Prometheus), never through a proxy. Anyone else (load balancers through
    Nginx, the public) learns that the process answers, and can hammer that
    without reaching the database or Redis.
    """
    if not request_allowed(request):
        return JsonResponse({"status": "ok"})
    checks = {
        "database": await _status("database", sync_to_async(_check_database)),
        "channel_layer": await _status("channel layer", _check_channel_layer),
    }
    healthy = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503
    )
