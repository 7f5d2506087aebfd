from django.conf import settings


def signup(request) -> dict:
    """Whether pages should offer the sign-up page (it is refused when closed)."""
    return {"signup_offered": settings.CHATSTACK_SIGNUP != "closed"}
