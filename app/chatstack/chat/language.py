"""Which language a page or socket speaks: the switcher's choice, kept on the account.

Pages follow Django's LocaleMiddleware: the language cookie, else Accept-Language.
The switcher sets that cookie and, for a signed-in person, stores the choice on
the account; logging in (in any browser) sets the cookie from the account again.
A WebSocket resolves its language from the same cookie and header in its
handshake, so the server's error frames speak the language of the page.
"""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest
from django.utils import translation
from django.views import i18n

from .models import Profile


def supported(language: str | None) -> bool:
    return language in dict(settings.LANGUAGES)


def keep_choice(user, language: str | None) -> None:
    """Stores `language` on the account, if the site has it."""
    if supported(language):
        Profile.objects.update_or_create(user=user, defaults={"language": language})


def chosen_in(request) -> str | None:
    """The language this browser chose with the switcher, if any."""
    return request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME)


@login_not_required
def set_language(request):
    """Django's set_language (POST with CSRF), which also stores a signed-in person's choice."""
    response = i18n.set_language(request)
    cookie = response.cookies.get(settings.LANGUAGE_COOKIE_NAME)
    if cookie is not None and request.user.is_authenticated:
        keep_choice(request.user, cookie.value)
    return response


class LoginView(auth_views.LoginView):
    """Log-in that switches this browser to the language chosen on the account."""

    def form_valid(self, form):
        response = super().form_valid(form)
        language = (
            Profile.objects.filter(user=form.get_user()).values_list("language", flat=True).first()
        )
        if supported(language):
            # The same cookie, with the same attributes, as Django's set_language sets.
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                language,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                path=settings.LANGUAGE_COOKIE_PATH,
                domain=settings.LANGUAGE_COOKIE_DOMAIN,
                secure=settings.LANGUAGE_COOKIE_SECURE,
                httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
                samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            )
        return response


def handshake_language(scope: dict) -> str:
    """The language a page requested with the same cookies and headers would be shown in."""
    request = HttpRequest()
    request.COOKIES = scope.get("cookies", {})
    accept = dict(scope.get("headers", [])).get(b"accept-language", b"")
    request.META["HTTP_ACCEPT_LANGUAGE"] = accept.decode("latin-1")
    return translation.get_language_from_request(request)


class WebsocketLocaleMiddleware:
    """Runs a WebSocket consumer in its handshake's language (inside CookieMiddleware).

    Django keeps the active language in a context variable: every frame the
    consumer sends, in its task and the database threads it starts, uses it.
    """

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        with translation.override(handshake_language(scope)):
            return await self.inner(scope, receive, send)
