from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView

from . import views
from .chat import language

urlpatterns = [
    path("", login_not_required(RedirectView.as_view(pattern_name="chat:lobby"))),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/signup/", views.SignupView.as_view(), name="signup"),
    path(
        "accounts/login/",
        language.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Saving the new password ends the account's other sessions and closes their
    # sockets (chat.revocation); this browser stays signed in.
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(template_name="chat/password_change_form.html"),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="chat/password_change_done.html"),
        name="password_change_done",
    ),
    path("language/", language.set_language, name="set_language"),
    path("chat/", include("chatstack.chat.urls")),
    path("admin/", admin.site.urls),
]
