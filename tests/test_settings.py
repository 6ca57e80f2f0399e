"""Settings from the environment: defaults, URLs, and loud failures on bad values."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from lesionsearch.env import env_bool, env_choice, env_int, env_list, parse_database_url

REPO = Path(__file__).resolve().parent.parent
PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': s.DATABASES['default']['NAME'], "
    "'broker': s.CELERY_BROKER_URL, 'debug': s.DEBUG, 'device': s.TORCH_DEVICE, 'media': str(s.MEDIA_ROOT), "
    "'hosts': s.ALLOWED_HOSTS, 'vis': s.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'], "
    "'soft': s.CELERY_TASK_SOFT_TIME_LIMIT, 'hard': s.CELERY_TASK_TIME_LIMIT}))"
)
PRODUCT_ENV = ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS",
               "MEDIA_ROOT", "TORCH_DEVICE", "LESIONSEARCH_VAR_DIR")


def start(**env: str) -> subprocess.CompletedProcess:
    """Load the product's settings in a fresh interpreter with exactly this environment."""
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCT_ENV}
    clean["DJANGO_SETTINGS_MODULE"] = "lesionsearch.settings"
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_no_env_is_the_embedded_default(tmp_path):
    import json

    result = start(LESIONSEARCH_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["engine"] == "django.db.backends.sqlite3" and got["name"] == str(tmp_path / "db.sqlite3")
    assert got["broker"] == "filesystem://" and (tmp_path / "broker" / "queue").is_dir()
    assert got["media"] == str(tmp_path / "media")
    assert got["debug"] is True and got["device"] == "auto"
    assert got["soft"] < got["hard"] < got["vis"]


def test_production_env_selects_postgres_and_redis(tmp_path):
    import json

    result = start(DATABASE_URL="postgres://ls:p%40ss@db.internal:5433/lesions", REDIS_URL="redis://cache:6379/1",
                   DEBUG="false", SECRET_KEY="x" * 50, ALLOWED_HOSTS="lesions.example.org", TORCH_DEVICE="CUDA",
                   MEDIA_ROOT=str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["engine"] == "django.db.backends.postgresql" and got["name"] == "lesions"
    assert got["broker"] == "redis://cache:6379/1"
    assert got["debug"] is False and got["device"] == "cuda" and got["hosts"] == ["lesions.example.org"]
    assert got["media"] == str(tmp_path / "m")


@pytest.mark.parametrize(("env", "message"), [
    ({"DEBUG": "false", "ALLOWED_HOSTS": "x.org"}, "SECRET_KEY must be set when DEBUG is off"),
    ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
    ({"TORCH_DEVICE": "tpu"}, "TORCH_DEVICE='tpu' is not valid; choose one of: auto, cpu, cuda"),
    ({"DATABASE_URL": "mysql://u@h/db"}, "unsupported scheme 'mysql'"),
    ({"DATABASE_URL": "postgres://u@h:5432/"}, "DATABASE_URL has no database name"),
    ({"CELERY_BROKER_URL": "amqp://guest@rabbit//"}, "CELERY_BROKER_URL='amqp://guest@rabbit//': use redis://"),
    ({"CELERY_TASK_SOFT_TIME_LIMIT": "100", "CELERY_TASK_TIME_LIMIT": "200", "CELERY_VISIBILITY_TIMEOUT": "150"},
     "CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT < CELERY_VISIBILITY_TIMEOUT"),
    ({"DEBUG": "0", "SECRET_KEY": "k" * 50}, "ALLOWED_HOSTS must be set when DEBUG is off"),
    ({"CACHE_URL": "memcached://cache:11211"}, "CACHE_URL='memcached://cache:11211': use redis://"),
    ({"LOGIN_FAILURE_LIMIT": "0"}, "LOGIN_FAILURE_LIMIT=0 must be at least 1"),
    ({"WORKER_NICE": "20"}, "WORKER_NICE=20 must be at most 19"),
    ({"WORKER_NICE": "-5"}, "WORKER_NICE=-5 must be at least 0"),
])
def test_invalid_values_fail_at_start_up_with_a_clear_message(tmp_path, env, message):
    result = start(LESIONSEARCH_VAR_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_database_urls():
    pg = parse_database_url("postgresql://user:se%2Fcret@localhost:5432/ls?sslmode=require")
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == ("user", "se/cret", "localhost", "5432", "ls")
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert parse_database_url("sqlite:////abs/db.sqlite3")["NAME"] == "/abs/db.sqlite3"
    assert parse_database_url("sqlite://:memory:")["NAME"] == ":memory:"
    with pytest.raises(ImproperlyConfigured, match="three slashes"):
        parse_database_url("sqlite://relative.db")


def test_env_helpers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", "-3")
    monkeypatch.setenv("X_LIST", "a, b")
    assert env_bool("X_BOOL", False) is True
    assert env_list("X_LIST", []) == ["a", "b"]
    assert env_choice("X_UNSET", ("a", "b"), "a") == "a"
    with pytest.raises(ImproperlyConfigured, match="X_INT=-3 must be at least 0"):
        env_int("X_INT", 1, minimum=0)
    monkeypatch.setenv("X_LIST", "a,,b")
    with pytest.raises(ImproperlyConfigured, match="empty entry"):
        env_list("X_LIST", [])


def test_production_settings_pass_the_deploy_check(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCT_ENV}
    env = {**clean, "DJANGO_SETTINGS_MODULE": "lesionsearch.settings", "DEBUG": "false", "SECRET_KEY": "s" * 64 + "-Zq9!",
           "ALLOWED_HOSTS": "lesions.example.org", "LESIONSEARCH_VAR_DIR": str(tmp_path), "SECURE_HSTS_PRELOAD": "true"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
