"""LesionSearch settings, read from the environment.

No environment variables at all gives the *embedded default*: SQLite and media under
``var/`` in the repository, and a Celery broker on the local filesystem that needs no
server (a real worker process still runs every task). ``DATABASE_URL`` and
``CELERY_BROKER_URL`` / ``REDIS_URL`` switch to PostgreSQL and Redis. Bad values stop
start-up with a message naming the variable (see ``lesionsearch.env``).
"""
from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from lesionsearch.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_path,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("LESIONSEARCH_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", True)
_secret = env_str("SECRET_KEY")
if _secret is None:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    _secret = "insecure-embedded-default-key-only-for-local-development"  # noqa: S105
SECRET_KEY = _secret
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off (comma-separated host names).")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc files served from /static/ (no CDN)
    "retrieval",
    "readerstudy",
    "lesionsearch.audit",
    "lesionsearch.jobs",
    "lesionsearch.ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Refuses an oversize body from its Content-Length, before anything (CSRF included) parses it.
    "lesionsearch.middleware.RequestSizeLimitMiddleware",
    "lesionsearch.audit.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lesionsearch.urls"
WSGI_APPLICATION = "lesionsearch.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "lesionsearch.context_processors.roles",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL")
if _database_url is None:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "db.sqlite3")}}
else:
    DATABASES = {"default": parse_database_url(_database_url)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write concurrently: WAL + IMMEDIATE transactions turn
    # "database is locked" errors into short waits.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so that a worker process started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The model backend, refusing a user name locked out after repeated failed sign-ins (web and admin).
AUTHENTICATION_BACKENDS = ["lesionsearch.auth.LockoutModelBackend"]
#: After LOGIN_FAILURE_LIMIT failed sign-ins for one user name within LOGIN_LOCKOUT_SECONDS, that
#: user name cannot sign in (not even with the right password) for LOGIN_LOCKOUT_SECONDS.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
#: Take the client IP (audit log) from the last X-Forwarded-For entry, appended by the one trusted proxy.
TRUST_X_FORWARDED_FOR = env_bool("TRUST_X_FORWARDED_FOR", False)
#: Bearer token that lets a Prometheus server off this machine scrape /metrics (loopback needs none).
METRICS_TOKEN = env_str("METRICS_TOKEN") or ""
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Files --------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "static")
# Patient images are never public: media is served by an authenticated view (lesionsearch.views).
MEDIA_URL = "/media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", VAR_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# In development WhiteNoise serves straight from the static folders (no collectstatic needed).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024  # larger uploads spill to a temporary file

# --- Cache ---------------------------------------------------------------------------------
# Throttle and sign-in failure counters. The default is per web process (each gunicorn worker
# counts on its own); CACHE_URL=redis://HOST:PORT/DB shares the counters between processes.
_cache_url = env_str("CACHE_URL")
if _cache_url is None:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "lesionsearch"}}
elif _cache_url.split("://", 1)[0] in {"redis", "rediss"}:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url,
                          "KEY_PREFIX": "lesionsearch"}}
else:
    raise ImproperlyConfigured(f"CACHE_URL={_cache_url!r}: use redis://HOST:PORT/DB (or leave unset).")

# --- Machine learning ---------------------------------------------------------------------
TORCH_DEVICE = env_choice("TORCH_DEVICE", ("auto", "cpu", "cuda"), "auto")

# --- Queries and the index ----------------------------------------------------------------
#: Largest accepted upload (a dermoscopic JPEG is a few MB; the decoded-pixel limit in
#: retrieval.images stops decompression bombs independently).
QUERY_MAX_UPLOAD_MB = env_int("QUERY_MAX_UPLOAD_MB", 20, minimum=1)
QUERY_DEFAULT_K = 6
#: The collection whose active index answers queries; empty = the most recently activated index.
QUERY_COLLECTION = env_str("QUERY_COLLECTION", "")
QUERY_MAX_K = 20
#: A claimed query or index build whose heartbeat is older than this is considered lost (its
#: worker died) and is retried, up to JOB_MAX_ATTEMPTS runs, then failed with a message.
JOB_STALE_SECONDS = env_int("JOB_STALE_SECONDS", 300, minimum=10)
#: A pending query nobody claimed for this long is enqueued again (a lost broker message).
QUERY_PENDING_RESEND_SECONDS = env_int("QUERY_PENDING_RESEND_SECONDS", 60, minimum=5)
#: A query still unclaimed after this long is failed with a message (no worker is running).
QUERY_PENDING_FAIL_SECONDS = env_int("QUERY_PENDING_FAIL_SECONDS", 1800, minimum=10)
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)
#: Every worker re-checks unfinished jobs this often (lost broker messages, dead workers), so
#: recovery never waits for someone to open the job's page or the next worker start.
JOB_SWEEP_SECONDS = env_int("JOB_SWEEP_SECONDS", 30, minimum=1)
#: Where the embedded default's job wake-ups live (``lesionsearch.jobs.notify``; Redis uses pub/sub).
JOB_NOTIFY_DIR = VAR_DIR / "notify"
#: CPU niceness a worker gives itself at start-up (0-19; 0 = none): where the web tier shares the
#: CPUs with inference (make run, one host), page and API reads go first and the model work takes
#: the CPU they leave. Raising niceness needs no privilege.
WORKER_NICE = env_int("WORKER_NICE", 10, minimum=0)
if WORKER_NICE > 19:
    raise ImproperlyConfigured(f"WORKER_NICE={WORKER_NICE} must be at most 19.")
#: Search backend: "auto" = exact below SEARCH_FAISS_MIN_VECTORS vectors, FAISS HNSW above;
#: "qdrant" = a Qdrant collection per index version and method (docs/scaling.md).
SEARCH_BACKEND = env_choice("SEARCH_BACKEND", ("auto", "exact", "faiss-hnsw", "faiss-ivf", "qdrant"), "auto")
SEARCH_FAISS_MIN_VECTORS = env_int("SEARCH_FAISS_MIN_VECTORS", 100_000, minimum=1)
#: Qdrant: a server (QDRANT_URL, e.g. http://qdrant:6333, with QDRANT_API_KEY when it asks for
#: one), or qdrant-client's in-process local mode (QDRANT_PATH: a folder, or ":memory:"), which
#: one process at a time may open: tests and a single-worker embedded setup only.
QDRANT_URL = env_str("QDRANT_URL")
QDRANT_API_KEY = env_str("QDRANT_API_KEY")
QDRANT_PATH = env_str("QDRANT_PATH")
QDRANT_COLLECTION_PREFIX = env_str("QDRANT_COLLECTION_PREFIX", "lesionsearch")
if QDRANT_URL and QDRANT_PATH:
    raise ImproperlyConfigured("Set QDRANT_URL (a Qdrant server) or QDRANT_PATH (local mode), not both.")
if SEARCH_BACKEND == "qdrant" and not (QDRANT_URL or QDRANT_PATH):
    raise ImproperlyConfigured("SEARCH_BACKEND=qdrant needs QDRANT_URL (a Qdrant server) or QDRANT_PATH "
                               "(qdrant-client's local mode: a folder, or :memory:).")
#: Index builds encode this many cases per task run, then continue in a new task: a build never
#: approaches the task time limit, queries queued meanwhile are served between chunks, and a
#: killed worker loses at most one chunk.
INDEX_CHUNK_SIZE = env_int("INDEX_CHUNK_SIZE", 64, minimum=1)
#: Chunks of one index build queued at once (each a job any free worker on the inference queue
#: takes): about the number of inference worker processes, or a little more, keeps every one
#: busy without a long queue whose messages the sweep would take for lost.
INDEX_CHUNKS_IN_FLIGHT = env_int("INDEX_CHUNKS_IN_FLIGHT", 4, minimum=1)
#: Style vectors (multi-stage Gram matrices) are stored projected on this many principal
#: directions fitted on the library at index time (retrieval.ml.measures.StyleProjection).
STYLE_COMPONENTS = env_int("STYLE_COMPONENTS", 256, minimum=8)
#: Query-result activation map pairs (paper 004) for every neighbour of every query.
QUERY_EVIDENCE_MAPS = env_bool("QUERY_EVIDENCE_MAPS", True)

# --- Celery -------------------------------------------------------------------------------
# Two queues: "inference" for model work (GPU/CPU inference, index builds, training), run by
# workers sized for the model; "light" for everything else, so quick jobs never wait behind
# an index build.
CELERY_QUEUE_INFERENCE = "inference"
CELERY_QUEUE_LIGHT = "light"
#: Model training (one epoch per task run): its own queue, so that a worker that trains never keeps a
#: clinician's query waiting (make run starts a second worker for it).
CELERY_QUEUE_TRAINING = "training"

_broker_url = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL")
BROKER_DIR = VAR_DIR / "broker"
if _broker_url is None:
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport with atomic message writes (see lesionsearch/broker.py).
    CELERY_BROKER_TRANSPORT = "lesionsearch.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # A consumer waits on its wake-up pipe, which every message sent writes to (lesionsearch/broker.py),
        # and lists the folder (~0.1 ms) at least this often in any case: a message whose wake-up did
        # not arrive waits at most this long. (Before the wake-ups it was a 5 ms poll.)
        "polling_interval": 0.1,
    }
    for _folder in ("queue", "control"):  # the transport expects them to exist
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
elif _broker_url.split("://", 1)[0] in {"redis", "rediss"}:
    CELERY_BROKER_URL = _broker_url
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
else:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL={_broker_url!r}: use redis://HOST:PORT/DB (or leave unset for the embedded broker)."
    )

# Long ML tasks: soft limit < hard limit < Redis visibility timeout, so that a task is
# stopped by its own limits before Redis would hand its unacknowledged message to another
# worker and run it twice.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", CELERY_TASK_SOFT_TIME_LIMIT + 300, minimum=1)
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 600, minimum=1)
if not CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT < CELERY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        "Celery limits must satisfy CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT < "
        f"CELERY_VISIBILITY_TIMEOUT; got {CELERY_TASK_SOFT_TIME_LIMIT} / {CELERY_TASK_TIME_LIMIT} / "
        f"{CELERY_VISIBILITY_TIMEOUT}."
    )
CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = CELERY_VISIBILITY_TIMEOUT
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Task state lives in our own rows (status fields with conditional claims); no result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = CELERY_QUEUE_LIGHT
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Eager mode exists only for unit tests that call a task body in-process; never the default.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- REST framework -----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.NamespaceVersioning",
    "ALLOWED_VERSIONS": ["v1"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # One error body shape for the whole API: {"error": {"status", "code", "message", "fields"?}}.
    "EXCEPTION_HANDLER": "retrieval.api.exceptions.api_exception_handler",
    # Only query creation is throttled (retrieval.api.views.QuerySubmitThrottle), per user.
    "DEFAULT_THROTTLE_RATES": {"query_submit": "60/min"},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LesionSearch API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "Content-based retrieval of dermoscopic images (SE-CBIR). Submit a dermoscopic image and "
        "receive the most similar previously diagnosed library cases, each with its diagnosis, "
        "similarity and saliency overlay.\n\n"
        "**Decision support only.** Similar cases are evidence for the clinician. The *neighbour "
        "vote* summarises the retrieved cases' diagnoses; it is not a diagnosis.\n\n"
        "Authentication: `Authorization: Token <key>` (an administrator creates keys with "
        "`python manage.py drf_create_token <username>`) or a signed-in session. Every error has "
        "the body `{\"error\": {\"status\", \"code\", \"message\", \"fields\"}}` "
        "(`fields` only for validation errors)."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "COMPONENT_SPLIT_REQUEST": True,
    # <id:...> path parameters (lesionsearch.converters): integers a database key can hold.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}},
    "ENUM_NAME_OVERRIDES": {
        "DiagnosisEnum": "retrieval.classes.DX_CHOICES",
        "JobStatusEnum": "lesionsearch.jobs.models.JobStatus",
        "StudyStatusEnum": "readerstudy.models.Study.Status",
        "RetrievalMethodEnum": "retrieval.methods.METHOD_CHOICES",
    },
    # Swagger UI and Redoc from the drf-spectacular-sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # validatorUrl None: Swagger UI would otherwise send the schema to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Security (production) ----------------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOG_LEVEL = env_choice("LOG_LEVEL", ("debug", "info", "warning", "error"), "info").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
