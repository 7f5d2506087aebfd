"""Test settings: the production settings module fed a fixed test environment.

pytest-django imports settings before any conftest runs, so the environment
is set here. The Redis URL is a placeholder; the `redis_server` fixture points
the channel layer and presence at a private redis-server.
"""

import os
import tempfile

os.environ.update(
    {
        "CHATSTACK_SECRET_KEY": "test-only-secret-key-not-used-anywhere-else-0123456789",
        "CHATSTACK_ALLOWED_HOSTS": "testserver,localhost",
        "CHATSTACK_DEBUG": "false",
        "CHATSTACK_SECURE": "false",
        "CHATSTACK_DB_ENGINE": "sqlite",
        # Never opened: Django tests run on an in-memory database.
        "CHATSTACK_SQLITE_PATH": os.path.join(tempfile.gettempdir(), "chatstack-test.sqlite3"),
        "CHATSTACK_REDIS_URLS": "redis://127.0.0.1:9/0",
        "CHATSTACK_LOG_LEVEL": "WARNING",
    }
)

from chatstack.settings import *  # noqa: F403
from chatstack.settings import STORAGES

# The manifest only exists after collectstatic; tests render templates without it.
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
