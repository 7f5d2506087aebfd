import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer
from channels_redis.utils import create_pool
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.sentinel import SentinelConnectionPool

from chatstack.redis_hosts import MasterSSLConnection

APP_DIR = Path(__file__).resolve().parent.parent


def load_settings() -> dict:
    return runpy.run_path(str(APP_DIR / "chatstack" / "settings.py"))


def test_all_missing_variables_are_named_at_once(env):
    env.delenv("CHATSTACK_SECRET_KEY")
    env.delenv("CHATSTACK_ALLOWED_HOSTS")
    env.delenv("CHATSTACK_SQLITE_PATH")
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load_settings()
    message = str(excinfo.value)
    for name in ["CHATSTACK_SECRET_KEY", "CHATSTACK_ALLOWED_HOSTS", "CHATSTACK_SQLITE_PATH"]:
        assert name in message


def test_postgresql_requires_its_connection_variables(env):
    env.setenv("CHATSTACK_DB_ENGINE", "postgresql")
    env.setenv("CHATSTACK_DB_NAME", "chat")
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load_settings()
    assert "CHATSTACK_DB_USER" in str(excinfo.value)
    assert "CHATSTACK_DB_HOST" in str(excinfo.value)
    assert "CHATSTACK_DB_NAME" not in str(excinfo.value)


def test_postgresql_settings(env):
    for name, value in [
        ("ENGINE", "postgresql"),
        ("NAME", "chat"),
        ("USER", "chat"),
        ("PASSWORD", "s3cret"),
        ("HOST", "db.internal"),
        ("PORT", "6432"),
    ]:
        env.setenv(f"CHATSTACK_DB_{name}", value)
    database = load_settings()["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == ("chat", "chat", "s3cret")
    assert (database["HOST"], database["PORT"]) == ("db.internal", 6432)


def test_defaults(env):
    settings = load_settings()
    assert settings["DEBUG"] is False
    assert settings["ALLOWED_HOSTS"] == ["chat.example.com"]
    assert settings["CSRF_TRUSTED_ORIGINS"] == []
    assert settings["SECURE_SSL_REDIRECT"] is True
    assert settings["SECURE_HSTS_SECONDS"] == 31536000
    database = settings["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]
    assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    layer = settings["CHANNEL_LAYERS"]["default"]
    assert layer["BACKEND"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert list(layer["CONFIG"]) == ["hosts"]
    assert [host["address"] for host in layer["CONFIG"]["hosts"]] == ["redis://127.0.0.1:6379/0"]
    assert settings["CHATSTACK_PRESENCE_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert settings["STORAGES"]["staticfiles"]["BACKEND"].endswith("ManifestStaticFilesStorage")
    assert (settings["CHATSTACK_MESSAGE_MAX_LENGTH"], settings["CHATSTACK_HISTORY_SIZE"]) == (
        2000,
        50,
    )
    assert settings["CHATSTACK_RATE_LIMIT_COUNT"] == settings["CHATSTACK_RATE_LIMIT_SECONDS"] == 10
    assert (settings["CHATSTACK_POST_BACKLOG"], settings["CHATSTACK_SLOW_READER_SECONDS"]) == (
        100,
        10,
    )


def test_overload_bounds_come_from_the_environment(env):
    env.setenv("CHATSTACK_POST_BACKLOG", "250")
    env.setenv("CHATSTACK_SLOW_READER_SECONDS", "30")
    settings = load_settings()
    assert (settings["CHATSTACK_POST_BACKLOG"], settings["CHATSTACK_SLOW_READER_SECONDS"]) == (
        250,
        30,
    )


def test_lists_and_core_layer(env):
    env.setenv("CHATSTACK_ALLOWED_HOSTS", " a.example, b.example ,")
    env.setenv("CHATSTACK_REDIS_URLS", "rediss://:pw@r1:6380/1,redis://r2:6379/0")
    env.setenv("CHATSTACK_CHANNEL_LAYER", "channels_redis.core.RedisChannelLayer")
    env.setenv("CHATSTACK_SECURE", "false")
    settings = load_settings()
    assert settings["ALLOWED_HOSTS"] == ["a.example", "b.example"]
    config = settings["CHANNEL_LAYERS"]["default"]["CONFIG"]
    # Must outlast channels_redis' blocking receive, or idle consumers crash.
    assert config["hosts"][0]["socket_timeout"] > RedisChannelLayer.brpop_timeout
    assert config["capacity"] == 1000
    assert [host["address"] for host in config["hosts"]] == [
        "rediss://:pw@r1:6380/1",
        "redis://r2:6379/0",
    ]
    assert settings["CHATSTACK_PRESENCE_REDIS_URL"] == "rediss://:pw@r1:6380/1"
    assert "SECURE_SSL_REDIRECT" not in settings


@pytest.mark.parametrize(
    "layer",
    ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"],
)
def test_sentinel_managed_shards_follow_their_master(env, layer):
    env.setenv("CHATSTACK_REDIS_SENTINELS", "10.0.0.1:26379, [fd00::2]:26379,")
    env.setenv(
        "CHATSTACK_REDIS_URLS",
        "rediss://chatstack:p%40ss@shard-a/0?ssl_ca_certs=/etc/ca.crt,rediss://chatstack:p%40ss@shard-b/0?ssl_ca_certs=/etc/ca.crt",
    )
    env.setenv("CHATSTACK_CHANNEL_LAYER", layer)
    settings = load_settings()
    hosts = settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    assert [host["master_name"] for host in hosts] == ["shard-a", "shard-b"], (
        "a shard would be lost"
    )
    first = hosts[0]
    assert first["sentinels"] == [("10.0.0.1", 26379), ("fd00::2", 26379)]
    # Without TLS and the password towards the sentinels the app never learns the master.
    sentinel = dict(first["sentinel_kwargs"])
    # A sentinel on the dead master's host is skipped at once, not asked for a minute.
    assert sentinel.pop("retry").get_retries() == 0
    assert sentinel == {
        "password": "p@ss",
        "socket_connect_timeout": 2,
        "socket_timeout": 2,
        "ssl": True,
        "ssl_ca_certs": "/etc/ca.crt",
    }
    assert (first["username"], first["password"], first["db"]) == ("chatstack", "p@ss", 0)
    assert first["ssl_ca_certs"] == "/etc/ca.crt"
    # A failover is what the retries ride out: they must reach the sentinel-managed pools too.
    assert first["retry"] is settings["CHATSTACK_REDIS_OPTIONS"]["retry"]
    if layer == "channels_redis.core.RedisChannelLayer":
        assert first["socket_timeout"] > RedisChannelLayer.brpop_timeout
    # A master's host that dies sends no reset: without these a subscriber waits forever.
    assert first["socket_keepalive"] and first["socket_keepalive_options"]
    pool = create_pool(first)
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "shard-a"
    # A master whose host froze answers nothing: without these the app waits on it forever.
    assert pool.connection_class is MasterSSLConnection
    assert first["health_check_interval"] < first["socket_timeout"]


def test_without_sentinels_the_urls_name_the_servers(env):
    env.setenv("CHATSTACK_REDIS_URLS", "redis://r1:6379/0")
    hosts = load_settings()["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    assert "master_name" not in hosts[0], (
        "a plain Redis URL would be taken for a sentinel-managed shard"
    )
    assert hosts[0]["address"] == "redis://r1:6379/0"


def test_a_malformed_sentinel_address_is_named(env):
    env.setenv("CHATSTACK_REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2")
    with pytest.raises(ImproperlyConfigured, match=r"CHATSTACK_REDIS_SENTINELS.*'10\.0\.0\.2'"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATSTACK_DEBUG", "maybe"),
        ("CHATSTACK_HISTORY_SIZE", "lots"),
        ("CHATSTACK_RATE_LIMIT_COUNT", "0"),
        ("CHATSTACK_POST_BACKLOG", "0"),
        ("CHATSTACK_SLOW_READER_SECONDS", "soon"),
        ("CHATSTACK_DB_ENGINE", "mysql"),
        ("CHATSTACK_CHANNEL_LAYER", "some.other.Layer"),
    ],
)
def test_invalid_values_are_rejected_with_the_variable_name(env, name, value):
    env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        load_settings()


def test_check_deploy_is_clean_in_production_configuration(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATSTACK_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        {
            "PYTHONPATH": str(APP_DIR),
            "CHATSTACK_SECRET_KEY": "k3y-" + "Zq8!vR2#pL" * 6,
            "CHATSTACK_ALLOWED_HOSTS": "chat.example.com",
            "CHATSTACK_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
            "CHATSTACK_STATIC_ROOT": str(tmp_path / "static"),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "chatstack.manage", "check", "--deploy", "--fail-level", "DEBUG"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
