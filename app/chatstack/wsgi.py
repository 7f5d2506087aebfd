"""WSGI entry point (uWSGI) for plain HTTP pages; WebSockets are served by daphne via asgi.py."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatstack.settings")

application = get_wsgi_application()
