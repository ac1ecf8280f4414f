"""Django settings for hcapadmin.  Everything comes from the environment;
see the settings table in README.md.  A malformed value stops start-up with
ImproperlyConfigured naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from hcapadmin.lib import dburl, env

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core -------------------------------------------------------------------
DEBUG = env.boolean("HCAPADMIN_DEBUG", False)
SANDBOX = env.boolean("HCAPADMIN_SANDBOX", False)
SECRET_KEY = env.secret("SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE): expected a long random string; it is required")
# Earlier keys, one per line, still accepted for signatures during a rotation
# (sessions, CSRF and signed values made with them stay valid); new ones use SECRET_KEY.
SECRET_KEY_FALLBACKS = [line.strip() for line in (env.secret("SECRET_KEY_FALLBACKS") or "").splitlines()
                        if line.strip()]
ALLOWED_HOSTS = env.csv_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.csv_list("CSRF_TRUSTED_ORIGINS", [])
HTTPS = env.boolean("HCAPADMIN_HTTPS", True)
TRUSTED_PROXY_HEADER = env.string("HCAPADMIN_TRUSTED_PROXY_HEADER", None)  # e.g. HTTP_X_FORWARDED_FOR
# How many trusted proxies appended an entry to that header: the client is the
# hops-th entry from the right (see hcapadmin/core/clientip.py).
TRUSTED_PROXY_HOPS = env.integer("HCAPADMIN_TRUSTED_PROXY_HOPS", 1, minimum=1, maximum=10)
ENVIRONMENT_NAME = env.string("HCAPADMIN_ENVIRONMENT_NAME", "sandbox" if SANDBOX else "")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "django_rq",
    "hcapadmin.core",
    "hcapadmin.accounts",
    "hcapadmin.audit",
    "hcapadmin.jobs",
    "hcapadmin.backups",
    "hcapadmin.logbrowser",
    "hcapadmin.restores",
    "hcapadmin.deploys",
    "migrations_ui",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "hcapadmin.accounts.middleware.PrincipalMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hcapadmin.urls"
WSGI_APPLICATION = "hcapadmin.wsgi.application"

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
                "hcapadmin.core.context_processors.portal",
            ],
        },
    }
]

# --- Portal database (PostgreSQL) --------------------------------------------
_database_url = env.url("DATABASE_URL", schemes=("postgres", "postgresql"), secret_value=True)
if not _database_url:
    raise ImproperlyConfigured("DATABASE_URL (or DATABASE_URL_FILE): expected a postgres:// URL; it is required")
DATABASES = {"default": dburl.parse(_database_url)}
DATABASES["default"]["CONN_MAX_AGE"] = env.integer("HCAPADMIN_DB_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and jobs -----------------------------------------------------------
REDIS_URL = env.url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"), secret_value=True)
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600, "SOCKET_CONNECT_TIMEOUT": 3, "SOCKET_TIMEOUT": 10},
}
JOB_QUEUE = "default"
JOB_HEARTBEAT_SECONDS = env.integer("HCAPADMIN_JOB_HEARTBEAT_SECONDS", 5, minimum=1)
JOB_STALE_SECONDS = env.integer("HCAPADMIN_JOB_STALE_SECONDS", 30, minimum=2)
JOB_LOCK_TTL_SECONDS = env.integer("HCAPADMIN_JOB_LOCK_TTL_SECONDS", 60, minimum=2)
JOB_SWEEP_SECONDS = env.integer("HCAPADMIN_JOB_SWEEP_SECONDS", 30, minimum=1)
JOB_QUEUE_GRACE_SECONDS = env.integer("HCAPADMIN_JOB_QUEUE_GRACE_SECONDS", 300, minimum=10)
TARGET_DATABASE = env.string("HCAPADMIN_TARGET_DATABASE", None)  # lock scope name; default: the managed database's name
if JOB_STALE_SECONDS <= JOB_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("HCAPADMIN_JOB_STALE_SECONDS: must be greater than HCAPADMIN_JOB_HEARTBEAT_SECONDS")
if JOB_LOCK_TTL_SECONDS <= JOB_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("HCAPADMIN_JOB_LOCK_TTL_SECONDS: must be greater than HCAPADMIN_JOB_HEARTBEAT_SECONDS")

# --- MongoDB logs --------------------------------------------------------------
MONGO_URL = env.url("MONGO_URL", "mongodb://127.0.0.1:27017/", schemes=("mongodb", "mongodb+srv"), secret_value=True)
MONGO_LOG_DB = env.string("MONGO_LOG_DB", "logs")
MONGO_LOG_COLLECTION = env.string("MONGO_LOG_COLLECTION", "log")
# Fail fast when MongoDB is down or not answering (server selection + connect).
MONGO_CONNECT_TIMEOUT_MS = env.integer("HCAPADMIN_MONGO_CONNECT_TIMEOUT_MS", 3000, minimum=100, maximum=60000)

# --- Platform -------------------------------------------------------------------
PLATFORM = env.choice("HCAPADMIN_PLATFORM", "local", ("local", "openshift"))
# local driver
MANAGED_DATABASE_URL = env.url(
    "HCAPADMIN_MANAGED_DATABASE_URL", None, schemes=("postgres", "postgresql"), secret_value=True
)
BACKUP_DIR = env.string("HCAPADMIN_BACKUP_DIR", str(BASE_DIR / "var" / "backups"))
MIGRATIONS_DIR = env.string("HCAPADMIN_MIGRATIONS_DIR", str(BASE_DIR / "var" / "migrations"))
PATRONI_URL = env.url("HCAPADMIN_PATRONI_URL", None, schemes=("http", "https"))
BACKUP_HOST = env.string("HCAPADMIN_BACKUP_HOST", "hcap-patroni")
LOG_BACKUP_DIR = env.string("HCAPADMIN_LOG_BACKUP_DIR", None)  # the log database's (MongoDB) backups; unset: none
NODE_PG_MIGRATE = env.string("HCAPADMIN_NODE_PG_MIGRATE", str(BASE_DIR / "node_modules" / ".bin" / "node-pg-migrate"))
# openshift driver
# https only: user tokens and the service account token never cross in clear text.
OPENSHIFT_API_URL = env.url("HCAPADMIN_OPENSHIFT_API_URL", None, schemes=("https",))
OPENSHIFT_CA_FILE = env.string("HCAPADMIN_OPENSHIFT_CA_FILE", None)
OPENSHIFT_NAMESPACE = env.string("HCAPADMIN_OPENSHIFT_NAMESPACE", None)
OPENSHIFT_TOKEN = env.secret("HCAPADMIN_OPENSHIFT_TOKEN")  # service account; in-cluster when unset
OPENSHIFT_SERVER_NAME = env.string("HCAPADMIN_OPENSHIFT_SERVER_NAME", "hcap-server")
OPENSHIFT_SERVER_KIND = env.choice("HCAPADMIN_OPENSHIFT_SERVER_KIND", "DeploymentConfig", ("DeploymentConfig", "Deployment"))
OPENSHIFT_PATRONI_NAME = env.string("HCAPADMIN_OPENSHIFT_PATRONI_NAME", "hcap-patroni")
OPENSHIFT_PATRONI_LEADER_CONFIGMAP = env.string("HCAPADMIN_OPENSHIFT_PATRONI_LEADER_CONFIGMAP", "hcap-patroni-leader")
OPENSHIFT_BACKUP_NAME = env.string("HCAPADMIN_OPENSHIFT_BACKUP_NAME", "hcap-backup")
OPENSHIFT_LOG_BACKUP_NAME = env.string("HCAPADMIN_OPENSHIFT_LOG_BACKUP_NAME", "hcap-backup-mongo-log")
OPENSHIFT_CRONJOBS = env.csv_list(
    "HCAPADMIN_OPENSHIFT_CRONJOBS",
    ["hcap-archive-withdrawn", "hcap-in-progress-stale-clean", "hcap-open-expired-clean"],
)
OPENSHIFT_DATABASE_HOST = env.string("HCAPADMIN_OPENSHIFT_DATABASE_HOST", None)  # driver default: the Patroni service
if PLATFORM == "openshift":
    for _name, _value in (("HCAPADMIN_OPENSHIFT_API_URL", OPENSHIFT_API_URL), ("HCAPADMIN_OPENSHIFT_NAMESPACE", OPENSHIFT_NAMESPACE)):
        if not _value:
            raise ImproperlyConfigured(f"{_name}: required when HCAPADMIN_PLATFORM=openshift")
    if OPENSHIFT_CA_FILE and not Path(OPENSHIFT_CA_FILE).is_file():
        raise ImproperlyConfigured(f"HCAPADMIN_OPENSHIFT_CA_FILE={OPENSHIFT_CA_FILE!r}: expected a readable PEM file")
elif not MANAGED_DATABASE_URL:
    raise ImproperlyConfigured("HCAPADMIN_MANAGED_DATABASE_URL: required when HCAPADMIN_PLATFORM=local (postgres:// URL)")

# --- Login and roles (issue 3) ---------------------------------------------------
LOCAL_ACCOUNTS = env.boolean("HCAPADMIN_LOCAL_ACCOUNTS", False)
# `make run` only (devtools/sandbox.py): a private kube-apiserver for token login.
SANDBOX_KUBE = env.boolean("HCAPADMIN_SANDBOX_KUBE", False)
DEMO_PASSWORD = env.secret("HCAPADMIN_DEMO_PASSWORD", "hcap-demo-password")
ROLE_GROUPS = {
    "viewer": env.csv_list("HCAPADMIN_GROUPS_VIEWER", ["hcap-viewers"]),
    "admin": env.csv_list("HCAPADMIN_GROUPS_ADMIN", ["hcap-admins"]),
    "approver": env.csv_list("HCAPADMIN_GROUPS_APPROVER", ["hcap-approvers"]),
    "auditor": env.csv_list("HCAPADMIN_GROUPS_AUDITOR", ["hcap-auditors"]),
}
SESSION_IDLE_SECONDS = env.integer("HCAPADMIN_SESSION_IDLE_SECONDS", 1800, minimum=60)
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.integer("HCAPADMIN_LOCKOUT_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = env.integer("HCAPADMIN_LOCKOUT_MINUTES", 15, minimum=1) / 60  # hours
# Per account and per (client address, account), never per address alone;
# bad OpenShift tokens per (address, token counter): see hcapadmin.accounts.auth.
AXES_LOCKOUT_PARAMETERS = "hcapadmin.accounts.auth.axes_lockout_parameters"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "hcapadmin.core.clientip.client_ip"
AXES_LOCKOUT_CALLABLE = "hcapadmin.accounts.views.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["password", "token", "csrfmiddlewaretoken"]
CSRF_FAILURE_VIEW = "hcapadmin.accounts.views.csrf_failure"
# OpenShift token login: active whenever HCAPADMIN_OPENSHIFT_API_URL is set
# (also with HCAPADMIN_PLATFORM=local).  Tokens are kept encrypted in the
# session with a key derived from HCAPADMIN_TOKEN_KEY (or SECRET_KEY).
TOKEN_KEY = env.secret("HCAPADMIN_TOKEN_KEY")
OPENSHIFT_AUTH_TIMEOUT = env.integer("HCAPADMIN_OPENSHIFT_AUTH_TIMEOUT", 10, minimum=1, maximum=120)
ROLE_RECHECK_SECONDS = env.integer("HCAPADMIN_ROLE_RECHECK_SECONDS", 15, minimum=0)
BEARER_CACHE_SECONDS = env.integer("HCAPADMIN_BEARER_CACHE_SECONDS", 30, minimum=0, maximum=300)
ROLE_ACCESS_REVIEW = env.boolean("HCAPADMIN_ROLE_ACCESS_REVIEW", False)
if ROLE_ACCESS_REVIEW and not OPENSHIFT_NAMESPACE:
    raise ImproperlyConfigured("HCAPADMIN_ROLE_ACCESS_REVIEW: needs HCAPADMIN_OPENSHIFT_NAMESPACE")
# SelfSubjectAccessReviews each role must also pass (HCAPADMIN_ROLE_ACCESS_REVIEW).
from hcapadmin.accounts.access import role_access_checks  # noqa: E402

ROLE_ACCESS_CHECKS = role_access_checks(OPENSHIFT_SERVER_KIND, OPENSHIFT_SERVER_NAME)

# --- Audit trail keys -------------------------------------------------------------------
# HMAC keys of the audit chain, kept outside the portal database: "id:key"
# entries separated by commas or new lines; the first signs new events, all
# verify (rotation: put the new key first, keep the old ones listed).  The
# sandbox and tests derive one from SECRET_KEY; everywhere else it is required.
from hcapadmin.audit.keys import parse_audit_keys, sandbox_audit_keys  # noqa: E402

_audit_key = env.secret("HCAPADMIN_AUDIT_KEY")
if _audit_key:
    AUDIT_KEYS = parse_audit_keys(_audit_key, "HCAPADMIN_AUDIT_KEY")
elif SANDBOX or DEBUG or env.boolean("HCAPADMIN_TESTING", False):
    AUDIT_KEYS = sandbox_audit_keys(SECRET_KEY)
else:
    raise ImproperlyConfigured(
        "HCAPADMIN_AUDIT_KEY (or HCAPADMIN_AUDIT_KEY_FILE): required outside the sandbox; "
        "expected id:key entries (key at least 32 characters), the first one signs")

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = 12 * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# --- Jobs and backups (issue 4) ----------------------------------------------------
BACKUP_STALE_HOURS = env.integer("HCAPADMIN_BACKUP_STALE_HOURS", 26, minimum=1)
BACKUP_SHRINK_PERCENT = env.integer("HCAPADMIN_BACKUP_SHRINK_PERCENT", 50, minimum=1, maximum=100)

# --- Restore requests -----------------------------------------------------------------
# Distinct approvers (never the requester) a restore request needs before it runs.
RESTORE_APPROVALS = env.integer("HCAPADMIN_RESTORE_APPROVALS", 1, minimum=1, maximum=10)
# A pending request not fully approved within this many hours expires.
RESTORE_EXPIRY_HOURS = env.integer("HCAPADMIN_RESTORE_EXPIRY_HOURS", 24, minimum=1, maximum=24 * 30)
# Restore rate (MB of compressed backup per second) assumed until a restore has been measured.
RESTORE_DEFAULT_MBPS = env.integer("HCAPADMIN_RESTORE_DEFAULT_MBPS", 20, minimum=1, maximum=10_000)

# --- Deploys (hcapadmin/deploys, ops/deploys.py) ------------------------------------------
# The folder with HCAP's OpenShift Templates (its repository's openshift/ folder).
DEPLOY_TEMPLATES_DIR = env.string("HCAPADMIN_TEMPLATES_DIR", "")
# Where build objects (BuildConfig, ImageStream) go; empty: <namespace prefix>-tools.
DEPLOY_TOOLS_NAMESPACE = env.string("HCAPADMIN_TOOLS_NAMESPACE", "")
# Seconds a server rollout may take until its new pods are Ready; past it the rollout has failed.
DEPLOY_ROLLOUT_TIMEOUT = env.integer("HCAPADMIN_ROLLOUT_TIMEOUT", 600, minimum=1, maximum=6 * 3600)

# --- Log browser (issue 5) -----------------------------------------------------------
# The sandbox runs FerretDB 1.24, which reads the whole collection for every sorted or
# range query (docs/logs.md); its demo volume is sized so a page takes about a second.
LOG_MAX_TIME_MS = env.integer("HCAPADMIN_LOG_MAX_TIME_MS", 30_000 if SANDBOX else 5000, minimum=100)
LOG_EXPORT_LIMIT = env.integer("HCAPADMIN_LOG_EXPORT_LIMIT", 100_000, minimum=1)
LOG_EXPORT_MAX_TIME_MS = env.integer("HCAPADMIN_LOG_EXPORT_MAX_TIME_MS", 120_000, minimum=100)
LOG_PAGE_SIZE = env.integer("HCAPADMIN_LOG_PAGE_SIZE", 50, minimum=1, maximum=500)
LOG_FOLLOW_SECONDS = env.integer("HCAPADMIN_LOG_FOLLOW_SECONDS", 5, minimum=1, maximum=300)
# Sources: "name=db.collection,name2=db.collection2"; default one source "hcap".
LOG_SOURCES: dict[str, tuple[str, str]] = {}
for _item in env.csv_list("HCAPADMIN_LOG_SOURCES", [f"hcap={MONGO_LOG_DB}.{MONGO_LOG_COLLECTION}"]):
    _name, _sep, _target = _item.partition("=")
    _db, _dot, _coll = _target.strip().partition(".")
    _name = _name.strip()
    if not (_sep and _dot and _name and _db and _coll) or not all(
        c.isalnum() or c in "_-" for c in _name + _db
    ) or "$" in _coll:
        raise ImproperlyConfigured(
            f"HCAPADMIN_LOG_SOURCES: {_item!r} is not name=database.collection (letters, digits, _ and -)"
        )
    if _name in LOG_SOURCES:
        raise ImproperlyConfigured(f"HCAPADMIN_LOG_SOURCES: source {_name!r} is named twice")
    LOG_SOURCES[_name] = (_db, _coll)

# Fields a log document's metadata may be under, read in this order (winston-mongodb's
# metaKey: "metadata" by default; "meta" in older or customised setups).
LOG_META_KEYS = tuple(env.csv_list("HCAPADMIN_LOG_META_KEYS", ["metadata", "meta"]))
if not LOG_META_KEYS or len(set(LOG_META_KEYS)) != len(LOG_META_KEYS) or not all(
    re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", k) for k in LOG_META_KEYS
):
    raise ImproperlyConfigured(
        "HCAPADMIN_LOG_META_KEYS: expected distinct top-level field names (letters, digits, _), e.g. metadata,meta"
    )

# --- Migrations (issue 6) ---------------------------------------------------------------
MIGRATIONS_TABLE = env.string("HCAPADMIN_MIGRATIONS_TABLE", "pgmigrations")
MIGRATIONS_SCHEMA = env.string("HCAPADMIN_MIGRATIONS_SCHEMA", "public")
# openshift: the files are listed and read by exec in a running server pod
MIGRATIONS_POD_SELECTOR = env.string("HCAPADMIN_MIGRATIONS_POD_SELECTOR", f"deploymentconfig={OPENSHIFT_SERVER_NAME}")
MIGRATIONS_POD_DIR = env.string("HCAPADMIN_MIGRATIONS_POD_DIR", "/opt/app-root/src/server/migrations")
MIGRATIONS_POD_CONTAINER = env.string("HCAPADMIN_MIGRATIONS_POD_CONTAINER", None)
for _name, _value in (("HCAPADMIN_MIGRATIONS_TABLE", MIGRATIONS_TABLE), ("HCAPADMIN_MIGRATIONS_SCHEMA", MIGRATIONS_SCHEMA)):
    if len(_value) > 63 or "\0" in _value or '"' in _value or "'" in _value:
        raise ImproperlyConfigured(f"{_name}={_value!r}: expected a PostgreSQL identifier (at most 63 characters, no quotes)")
if not MIGRATIONS_POD_DIR.startswith("/"):
    raise ImproperlyConfigured(f"HCAPADMIN_MIGRATIONS_POD_DIR={MIGRATIONS_POD_DIR!r}: expected an absolute path")

# --- Security -------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_COOKIE_HTTPONLY = True
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.integer("HCAPADMIN_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- Static files, i18n ------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
TESTING = env.boolean("HCAPADMIN_TESTING", False)
if TESTING:
    # The suite creates many users; the production hasher is slow on purpose.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if DEBUG or TESTING:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    WHITENOISE_USE_FINDERS = True
LANGUAGE_CODE = "en-ca"
TIME_ZONE = env.string("HCAPADMIN_TIME_ZONE", "America/Vancouver")
USE_I18N = False
USE_TZ = True

# --- Logging: never log request bodies or headers (tokens live there) ---------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.choice("HCAPADMIN_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))},
    "loggers": {"django.request": {"level": "ERROR"}, "kubernetes": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
