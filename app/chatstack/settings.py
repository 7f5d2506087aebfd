"""Django settings for chatstack.

Every deployment-specific value comes from a CHATSTACK_* environment variable,
so one wheel serves every host and the deployment owns a single env file.
Missing required variables are reported together, so a broken env file is
fixed in one pass rather than one variable per restart.
"""

import ipaddress
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatstack.redis_hosts import host_entry, parse_sentinels

PACKAGE_DIR = Path(__file__).resolve().parent

_missing: list[str] = []
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        _missing.append(name)
    return value


def _str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def _list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in _str(name, default).split(",") if item.strip()]


def _networks(name: str, default: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _list(name, default):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as error:
            raise ImproperlyConfigured(
                f"{name} must be comma-separated IP addresses or networks (CIDR); {error}"
            ) from None
    if not networks:
        raise ImproperlyConfigured(f"{name} must name at least one address or network")
    return tuple(networks)


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


SECRET_KEY = _required("CHATSTACK_SECRET_KEY")
ALLOWED_HOSTS = _list("CHATSTACK_ALLOWED_HOSTS")
if not ALLOWED_HOSTS:
    _missing.append("CHATSTACK_ALLOWED_HOSTS")
DEBUG = _bool("CHATSTACK_DEBUG", False)
CSRF_TRUSTED_ORIGINS = _list("CHATSTACK_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # First, so that `runserver` is daphne's ASGI server and serves WebSockets in development.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chatstack.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language cookie (the switcher's, or the account's set at login), else Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Pages are private unless a view opts out with @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatstack.urls"
WSGI_APPLICATION = "chatstack.wsgi.application"
ASGI_APPLICATION = "chatstack.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chatstack.chat.context_processors.signup",
            ],
        },
    },
]

DB_ENGINE = _choice("CHATSTACK_DB_ENGINE", "sqlite", ("sqlite", "postgresql"))
if DB_ENGINE == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _required("CHATSTACK_SQLITE_PATH"),
            "OPTIONS": {
                # WAL lets the uWSGI and daphne processes read while one of them writes.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                # Take the write lock when the transaction starts, so a writer waits for
                # `timeout` instead of failing with "database is locked" on lock upgrade.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
    # Chat messages are written under this lock (chat.history.writer_lock).
    CHATSTACK_SQLITE_WRITER_LOCK = f"{DATABASES['default']['NAME']}-writer.lock"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _required("CHATSTACK_DB_NAME"),
            "USER": _required("CHATSTACK_DB_USER"),
            # May legitimately be empty (peer or certificate authentication).
            "PASSWORD": os.environ.get("CHATSTACK_DB_PASSWORD", ""),
            "HOST": _required("CHATSTACK_DB_HOST"),
            "PORT": _int("CHATSTACK_DB_PORT", 5432),
            # Fail fast (and let /healthz say so) instead of hanging on an unreachable server.
            "OPTIONS": {"connect_timeout": 5},
        }
    }

# Keep each thread's connection instead of opening one per request and per
# message (Django's default of 0): every chat message is one write, and opening
# the connection cost more than the write. Checked before reuse, so a database
# restart costs one failed check, not a failed request.
DATABASES["default"]["CONN_MAX_AGE"] = 600
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:lobby"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
# Inside the package, so the wheel every host installs carries the catalogs.
LOCALE_PATHS = [PACKAGE_DIR / "locale"]
# Django's default cookie ends with the browser session: a visitor would choose again.
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
# Only the server reads it.
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("CHATSTACK_STATIC_ROOT", "").strip() or None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            # Content-hashed names let Nginx serve static files with far-future caching.
            else "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
        )
    },
}

SECURE = _bool("CHATSTACK_SECURE", True)
if SECURE:
    # Nginx terminates TLS; trust its X-Forwarded-Proto (it must overwrite, not pass through, it).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Local probes (systemd, Ansible, load balancers) speak plain HTTP to the app server.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

REDIS_URLS = _list("CHATSTACK_REDIS_URLS", "redis://127.0.0.1:6379/0")
if not REDIS_URLS:
    _missing.append("CHATSTACK_REDIS_URLS")
# Where Redis Sentinel watches the shards (the playbooks' redis_shard), each URL
# names its shard's master instead of a host, and these sentinels say where it
# is (chatstack.redis_hosts). Empty: the URLs name the servers themselves.
try:
    REDIS_SENTINELS = parse_sentinels(_str("CHATSTACK_REDIS_SENTINELS", ""))
except ValueError as error:
    raise ImproperlyConfigured(
        f"CHATSTACK_REDIS_SENTINELS must be comma-separated host:port; {error}"
    ) from None
CHANNEL_LAYER_BACKEND = _choice(
    "CHATSTACK_CHANNEL_LAYER",
    # Measured in bench/: twice the core layer's fan-out. It loses what is published
    # while it reconnects (django/channels_redis#256); consumers fill such gaps from
    # the database (chat.consumers.ChatConsumer.deliver).
    "channels_redis.pubsub.RedisPubSubChannelLayer",
    (
        "channels_redis.core.RedisChannelLayer",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
        "channels.layers.InMemoryChannelLayer",
    ),
)
# Consumers refresh their presence entry and group membership this often.
CHATSTACK_HEARTBEAT_SECONDS = 20
# Connection options for every Redis client of the app (channel layer, presence).
# redis-py caps a pool at 100 connections and fails beyond that with
# MaxConnectionsError: a few hundred sockets joining or leaving at once (every
# client reconnecting after a restart) exceed it, and the channel layer then
# drops messages. The cap here stays under Redis' maxclients for a few
# processes. The health check replaces pooled connections that Redis closed
# (a restart) before a command fails on them.
# After a Redis restart every pooled connection is dead, and redis-py's default
# (no retry) fails the next command on each: a handshake answered 500, a post
# refused. Two retries on a fresh connection (0.2 s, then 0.4 s later) ride that
# out; a server still down fails the command within seconds, as before. A retried
# command may have run once already (only its reply was lost), so every command
# the app sends must be safe to repeat: see chat.limits, chat.latest and
# chat.presence. channels_redis' own commands are: ZADD/PUBLISH of one serialised
# message twice is one member or a duplicate that consumers drop by message id.
# All the app's clients are redis.asyncio ones, which this Retry is made for.
CHATSTACK_REDIS_OPTIONS = {
    "socket_connect_timeout": 5,
    "max_connections": _int("CHATSTACK_REDIS_MAX_CONNECTIONS", 2000),
    "health_check_interval": 15,
    "retry": Retry(ExponentialBackoff(cap=1, base=0.1), 2),
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
}
# redis-py 8 lowered the default socket_timeout to 5 s, which aborts the core
# layer's 5 s blocking BZPOPMIN and tears down every idle consumer
# (django/channels_redis#422): longer than that, yet finite, so a vanished
# server is still noticed. The pub/sub layer sends no blocking command: there a
# post that meets a frozen master fails within seconds, with an error the
# sender sees, instead of holding up every post of the process.
_LAYER_SOCKET_TIMEOUT = (
    30 if CHANNEL_LAYER_BACKEND == "channels_redis.core.RedisChannelLayer" else 5
)
_redis_hosts = [
    host_entry(
        url, REDIS_SENTINELS, socket_timeout=_LAYER_SOCKET_TIMEOUT, **CHATSTACK_REDIS_OPTIONS
    )
    for url in REDIS_URLS
]
if CHANNEL_LAYER_BACKEND == "channels_redis.pubsub.RedisPubSubChannelLayer":
    _layer_config: dict = {"hosts": _redis_hosts}
else:
    _layer_config = {
        # The default of 100 queued messages per channel silently drops group
        # messages to a consumer that is briefly slow (e.g. a busy room).
        "capacity": 1000,
        # Consumers re-join their group on every heartbeat, so a short expiry only
        # evicts channels of processes that died without leaving.
        "group_expiry": 15 * CHATSTACK_HEARTBEAT_SECONDS,
    }
    if CHANNEL_LAYER_BACKEND == "channels_redis.core.RedisChannelLayer":
        _layer_config["hosts"] = _redis_hosts
CHANNEL_LAYERS = {"default": {"BACKEND": CHANNEL_LAYER_BACKEND, "CONFIG": _layer_config}}
# Presence lives in Redis so every daphne process of the pool sees the same room members.
CHATSTACK_PRESENCE_REDIS_URL = REDIS_URLS[0] if REDIS_URLS else ""

CHATSTACK_MESSAGE_MAX_LENGTH = _int("CHATSTACK_MESSAGE_MAX_LENGTH", 2000)
# Limits per account, over all its sockets, Daphne processes and app hosts
# (chat.limits). A person types well under a message a second and keeps a few
# tabs on a couple of devices open; a script with 500 sockets gets no more.
CHATSTACK_RATE_LIMIT_COUNT = _int("CHATSTACK_RATE_LIMIT_COUNT", 10)
CHATSTACK_RATE_LIMIT_SECONDS = _int("CHATSTACK_RATE_LIMIT_SECONDS", 10)
CHATSTACK_ACCOUNT_MAX_CONNECTIONS = _int("CHATSTACK_ACCOUNT_MAX_CONNECTIONS", 20)
CHATSTACK_ACCOUNT_MAX_ROOMS = _int("CHATSTACK_ACCOUNT_MAX_ROOMS", 10)
# Messages older than this are deleted by `chatstack-manage prune`; 0 keeps them forever.
CHATSTACK_MESSAGE_RETENTION_DAYS = _int("CHATSTACK_MESSAGE_RETENTION_DAYS", 365, minimum=0)
# Who may create an account at /accounts/signup/: anyone (open), nobody but an
# admin with `chatstack-manage` or /admin/ (closed), or holders of a code from
# `chatstack-manage invite` (invite).
CHATSTACK_SIGNUP = _choice("CHATSTACK_SIGNUP", "open", ("open", "closed", "invite"))
CHATSTACK_HISTORY_SIZE = _int("CHATSTACK_HISTORY_SIZE", 50, minimum=0)

# Graceful overload (chat.overload): refuse with "busy" rather than lag.
# Posts a Daphne process holds, accepted and not yet stored and broadcast. They
# drain through its one database thread at the cost of a store plus a fan-out
# each: ~4 ms for a room of 20 at the ~210 µs per delivery measured in issue 18's
# benchmark. 100 of them are ~0.4 s of work, under the 1 s a delivered message
# may take at overload (issue 18), leaving the rest for the fan-out queues; one
# socket holds at most one (its posts are stored one after another), so a bound
# of 100 is never met below 100 people posting at the same instant.
CHATSTACK_POST_BACKLOG = _int("CHATSTACK_POST_BACKLOG", 100)
# A post that waited longer than this for the database (behind the process's
# other posts, another process holding SQLite's writer lock, a checkpoint) is
# refused, not stored late. Half the 1 s bound on delivery at four times the
# load the host carries (issue 18): with 2 s the benchmark's posts queued for
# 0.5 to 2.5 s, and p99 latency there was 8 s; with 0.5 s, 1.3 s (the rest is
# the fan-out, and the load generator sharing the CPU). 0.25 s refused more
# and delivered less.
CHATSTACK_POST_MAX_WAIT_SECONDS = 0.5
# A Daphne process whose event loop runs later than this (smoothed over about a
# second) refuses posts as busy (chat.overload.LoopLag): a quarter of the 1 s
# bound on delivery at overload, since a message crosses the loops of its
# sender's process and of its readers' (issue 18). On a quiet host the loop is
# a few milliseconds late.
CHATSTACK_BUSY_LAG_MS = _int("CHATSTACK_BUSY_LAG_MS", 250)
# A client that has left more than Twisted's 64 KiB waiting beyond a full
# kernel socket buffer, and kept it so for this long while still being sent
# more, is cut off (close code 4008) and catches up from the history. Long
# enough to ride out a mobile network handover or a tab the browser froze for a
# moment; short enough that a stuck socket holds at most this many seconds of
# its room's traffic in memory (at 10 messages/s of 2 KB, ~200 KB).
CHATSTACK_SLOW_READER_SECONDS = _int("CHATSTACK_SLOW_READER_SECONDS", 10)

# Clients that may read the Prometheus metrics each daphne process serves at /metrics.
CHATSTACK_METRICS_ALLOWED_NETWORKS = _networks(
    "CHATSTACK_METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128"
)

LOG_LEVEL = _str("CHATSTACK_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # journald adds timestamps and the unit name.
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

if _missing:
    raise ImproperlyConfigured("Missing required environment variables: " + ", ".join(_missing))
