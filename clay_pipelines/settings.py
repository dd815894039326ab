"""Where the project keeps its state, and the names it gives things. Read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
SQL_DIR = PROJECT_ROOT / "sql"

APP_ROLE = "clay_app"
MAINTENANCE_ROLE = "clay_maintenance"
OWNER_ROLE = "clay_owner"
PLATFORM_DATABASE = "clay"

# The specification's nine tables; every one but tenants holds tenant data under row-level security.
TENANT_TABLES = (
    "systems",
    "executions",
    "routing_rules",
    "dreams",
    "constitutional_amendments",
    "resources",
    "payroll_entries",
    "mcp_telemetry_log",
)
PLATFORM_TABLES = ("tenants", *TENANT_TABLES)
DAGSTER_DATABASE = "dagster"


# ---------------------------------------------------------------------------------------------
# Every environment variable the project reads: its default and meaning. README's table lists the
# same (a test compares them); code reads them through Settings, never os.environ directly.


@dataclass(frozen=True, kw_only=True)
class Variable:
    name: str
    default: str | None
    meaning: str


def _limit_variables() -> list[Variable]:
    out = []
    for kind in ("tenant", "maintenance"):
        for setting, value in _LIMIT_DEFAULTS[kind].as_settings().items():
            out.append(
                Variable(
                    name=f"CLAY_{kind.upper()}_{setting.upper()}",
                    default=value,
                    meaning=f"{setting} every {kind} transaction sets for itself (a PostgreSQL duration)",
                )
            )
    return out


def variables() -> tuple[Variable, ...]:
    return (
        Variable(
            name="DATABASE_URL",
            default=None,
            meaning="libpq URL of an external PostgreSQL (Supabase, RDS, ...); "
            "unset: the embedded server. Migrations run with it (it must be able to create roles)",
        ),
        Variable(
            name="CLAY_APP_DATABASE_URL",
            default=None,
            meaning="log in as clay_app directly; default: switch to "
            "clay_app inside each transaction over DATABASE_URL (clay exports the resolved one to Dagster)",
        ),
        Variable(name="CLAY_MAINTENANCE_DATABASE_URL", default=None, meaning="the same for clay_maintenance"),
        Variable(
            name="CLAY_POOLED_DATABASE_URL",
            default=None,
            meaning="libpq URL of a transaction-mode pooler (PgBouncer, Supabase's on port 6543) in front of the "
            "platform database: the application and maintenance connections go through it unless the two "
            "variables above name their own; migrations and Dagster's storage stay on the direct connection",
        ),
        Variable(
            name="DAGSTER_PG_URL",
            default=None,
            meaning="Dagster's storage; default: the embedded `dagster` "
            "database, or DATABASE_URL with search_path=dagster (clay exports it with the psycopg2 scheme)",
        ),
        Variable(
            name="CLAY_PG_LISTEN",
            default=None,
            meaning="TCP addresses the embedded PostgreSQL listens on besides its socket (comma-separated); "
            "unset: the socket only. `clay deploy local` adds 127.0.0.1 and the worker namespace's host address",
        ),
        Variable(
            name="CLAY_PG_PORT",
            default="5432",
            meaning="the embedded PostgreSQL's port: its TCP port and the number in its socket's name",
        ),
        Variable(
            name="CLAY_EXECUTOR",
            default="multiprocess",
            meaning="how a run executes its steps: multiprocess (in the run's own processes) or celery "
            "(on Celery workers through CLAY_CELERY_BROKER_URL; `clay deploy local` sets it)",
        ),
        Variable(
            name="CLAY_CELERY_BROKER_URL",
            default=None,
            meaning="the Celery broker (redis://... or amqp://...) the celery executor and its workers use",
        ),
        Variable(
            name="CLAY_CELERY_BACKEND_URL",
            default=None,
            meaning="the Celery result backend (default: the broker URL)",
        ),
        Variable(
            name="CLAY_DEPLOY_HOST",
            default="127.0.0.1",
            meaning="the address `clay deploy local` binds the webserver and the code server to (Redis and "
            "PostgreSQL stay on 127.0.0.1 and the worker namespace's address)",
        ),
        Variable(
            name="CLAY_DEPLOY_WEBSERVER_PORT", default="3000", meaning="`clay deploy local`: the webserver's port"
        ),
        Variable(
            name="CLAY_DEPLOY_GRPC_PORT", default="4266", meaning="`clay deploy local`: the code location's gRPC port"
        ),
        Variable(name="CLAY_DEPLOY_REDIS_PORT", default="6379", meaning="`clay deploy local`: Redis's port"),
        Variable(
            name="CLAY_DEPLOY_NETNS",
            default="auto",
            meaning="`clay deploy local`: auto (the last worker in its own network and mount namespace where the "
            "machine allows it) or off",
        ),
        Variable(
            name="CLAY_DATABASE_NAME",
            default=PLATFORM_DATABASE,
            meaning="the platform database's name on the embedded server",
        ),
        Variable(
            name="CLAY_STATE_DIR",
            default=None,
            meaning="the embedded server, Dagster's home and the sample world's files (default .clay/ in the project)",
        ),
        Variable(
            name="DAGSTER_HOME",
            default=None,
            meaning="Dagster's home (default STATE_DIR/dagster_home; clay copies dagster.yaml there)",
        ),
        Variable(
            name="CLAY_EMBEDDER",
            default="hashing",
            meaning="the embedder: hashing (offline), minilm (the optional extra), openai",
        ),
        Variable(
            name="CLAY_HISTORY_START",
            default="2024-01-01",
            meaning="the first day of the daily partitions (request embeddings, dream nights)",
        ),
        Variable(name="OPENAI_API_KEY", default=None, meaning="key of the openai embedder's endpoint"),
        Variable(name="OPENAI_BASE_URL", default="https://api.openai.com/v1", meaning="the openai embedder's endpoint"),
        Variable(
            name="CLAY_OPENAI_EMBEDDING_MODEL", default="text-embedding-3-small", meaning="the openai embedder's model"
        ),
        Variable(name="BAMBOOHR_COMPANY_DOMAIN", default=None, meaning="BambooHR company for the payroll dual-write"),
        Variable(name="BAMBOOHR_API_KEY", default=None, meaning="BambooHR API key"),
        Variable(
            name="BAMBOOHR_TENANT",
            default=None,
            meaning="the tenant (name, domain or id) that BambooHR company belongs to",
        ),
        Variable(name="BAMBOOHR_BASE_URL", default=None, meaning="another BambooHR gateway (a proxy, a test server)"),
        *_limit_variables(),
        Variable(
            name="CLAY_DEFAULT_ESTIMATED_COST_USD",
            default="0.05",
            meaning="budget reserved for a run when neither its rule nor its skill has an average cost",
        ),
        Variable(
            name="CLAY_RESERVATION_TTL_SECONDS",
            default="900",
            meaning="a budget reservation's life; the sweeper releases it after that unless settled",
        ),
        Variable(
            name="CLAY_RECEIPT_KEY_DIR",
            default=None,
            meaning="folder of the receipt signing keys, files of mode 0600 (default STATE_DIR/receipt_keys)",
        ),
        Variable(
            name="CLAY_RECEIPT_SIGNER",
            default=None,
            meaning="module:callable returning the receipt signer (a KMS hook); unset: the key file",
        ),
        Variable(
            name="CLAY_RECEIPT_CHECKPOINT_DIR",
            default=None,
            meaning="where signed receipt checkpoints are exported (default the archive store's receipt-checkpoints/)",
        ),
        Variable(
            name="CLAY_RECEIPT_PENDING_LIMIT_MINUTES",
            default="60",
            meaning="a completed execution unsigned for longer is flagged by receipt verification",
        ),
        Variable(name="CLAY_LOG_LEVEL", default="WARNING", meaning="the command line's log level"),
        Variable(name="CLAY_DEBUG", default=None, meaning="1: tracebacks instead of one-line errors"),
        Variable(
            name="CLAY_LIFECYCLE_RETENTION_ENABLED",
            default=None,
            meaning="1: the lifecycle archives away and prunes on schedule; unset: it reports what it would do",
        ),
        Variable(
            name="CLAY_ARCHIVE_URL",
            default=None,
            meaning="the archive store (default STATE_DIR/archive; any fsspec URL)",
        ),
        Variable(
            name="CLAY_TELEMETRY_RAW_DAYS", default="90", meaning="MCP tool calls older than this are rolled up per day"
        ),
        Variable(name="CLAY_DREAM_RETENTION_DAYS", default="730", meaning="dreams not promoted are deleted after this"),
        Variable(
            name="CLAY_BENCH_LIFECYCLE_EXECUTIONS", default="1000000", meaning="executions in the lifecycle benchmark"
        ),
        Variable(name="CLAY_BENCH_EXECUTIONS", default="1000000", meaning="executions in the routing scale benchmark"),
        Variable(name="CLAY_BENCH_REPLAY_REQUESTS", default="100000", meaning="requests in the dream replay benchmark"),
        Variable(
            name="CLAY_BENCH_DREAM_WINDOW", default="100000", meaning="window requests in the dream cycle benchmark"
        ),
    )


def env(name: str) -> str | None:
    """One of the project's variables (its default when unset or empty); KeyError for a name that is
    not declared in variables()."""
    variable = {v.name: v for v in variables()}[name]
    return os.environ.get(name) or variable.default


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The settings a process runs with, typed, read once from the environment."""

    database_url: str | None
    app_database_url: str | None
    maintenance_database_url: str | None
    pooled_database_url: str | None
    dagster_pg_url: str | None
    database_name: str
    embedder: str
    history_start: str
    debug: bool
    log_level: str

    @classmethod
    def from_environment(cls) -> Settings:
        return cls(
            database_url=env("DATABASE_URL"),
            app_database_url=env("CLAY_APP_DATABASE_URL"),
            maintenance_database_url=env("CLAY_MAINTENANCE_DATABASE_URL"),
            pooled_database_url=env("CLAY_POOLED_DATABASE_URL"),
            dagster_pg_url=env("DAGSTER_PG_URL"),
            database_name=env("CLAY_DATABASE_NAME") or PLATFORM_DATABASE,
            embedder=env("CLAY_EMBEDDER") or "hashing",
            history_start=env("CLAY_HISTORY_START") or "2024-01-01",
            debug=bool(env("CLAY_DEBUG")),
            log_level=env("CLAY_LOG_LEVEL") or "WARNING",
        )


def current() -> Settings:
    return Settings.from_environment()


def state_dir() -> Path:
    """Project-local, git-ignored folder for the embedded database, Dagster's home and the inbox."""
    return Path(env("CLAY_STATE_DIR") or PROJECT_ROOT / ".clay").resolve()


def pgdata_dir() -> Path:
    return state_dir() / "pgdata"


def pg_listen_addresses() -> tuple[str, ...]:
    """TCP addresses the embedded server listens on besides its socket (CLAY_PG_LISTEN)."""
    return tuple(a.strip() for a in (env("CLAY_PG_LISTEN") or "").split(",") if a.strip())


def pg_port() -> int:
    return _port("CLAY_PG_PORT")


def _port(name: str) -> int:
    text = env(name) or ""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{name} must be a TCP port (1-65535), got {text!r}")
    return int(text)


def deploy_ports() -> dict[str, int]:
    """The ports `clay deploy local` binds, by what binds them; ValueError when two are the same."""
    ports = {
        "webserver": _port("CLAY_DEPLOY_WEBSERVER_PORT"),
        "code server": _port("CLAY_DEPLOY_GRPC_PORT"),
        "redis": _port("CLAY_DEPLOY_REDIS_PORT"),
    }
    if len(set(ports.values())) != len(ports):
        raise ValueError(
            f"CLAY_DEPLOY_WEBSERVER_PORT, CLAY_DEPLOY_GRPC_PORT and CLAY_DEPLOY_REDIS_PORT must differ: {ports}"
        )
    return ports


EXECUTORS = ("multiprocess", "celery")


def executor_name() -> str:
    name = env("CLAY_EXECUTOR") or "multiprocess"
    if name not in EXECUTORS:
        raise ValueError(f"CLAY_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return name


def celery_broker_url() -> str:
    url = env("CLAY_CELERY_BROKER_URL")
    if not url:
        raise ValueError("CLAY_EXECUTOR=celery needs CLAY_CELERY_BROKER_URL (redis://... or amqp://...)")
    return url


def celery_backend_url() -> str:
    return env("CLAY_CELERY_BACKEND_URL") or celery_broker_url()


def dagster_home() -> Path:
    return Path(env("DAGSTER_HOME") or state_dir() / "dagster_home").resolve()


def sample_world_dir() -> Path:
    """The sample world's files: payroll inbox, employee directories, ground truth."""
    return state_dir() / "world"


def receipt_key_dir() -> Path:
    return Path(env("CLAY_RECEIPT_KEY_DIR") or state_dir() / "receipt_keys").resolve()


def receipt_checkpoint_dir() -> str:
    """Where checkpoints are exported: CLAY_RECEIPT_CHECKPOINT_DIR, else the archive store's
    receipt-checkpoints/ (a local folder or any fsspec URL)."""
    explicit = env("CLAY_RECEIPT_CHECKPOINT_DIR")
    if explicit:
        return explicit if "://" in explicit else str(Path(explicit).resolve())
    archive = env("CLAY_ARCHIVE_URL") or str((state_dir() / "archive").resolve())
    return f"{archive.rstrip('/')}/receipt-checkpoints"


def receipt_signer_hook() -> str | None:
    return env("CLAY_RECEIPT_SIGNER")


def default_estimated_cost_usd() -> str:
    return env("CLAY_DEFAULT_ESTIMATED_COST_USD") or "0.05"


def reservation_ttl_seconds() -> int:
    return int(env("CLAY_RESERVATION_TTL_SECONDS") or 900)


def receipt_pending_limit_minutes() -> int:
    return int(env("CLAY_RECEIPT_PENDING_LIMIT_MINUTES") or 60)


@dataclass(frozen=True, kw_only=True)
class TransactionLimits:
    """Bounds every transaction sets for itself with SET LOCAL (role-level settings do not apply when
    the application switches role inside a transaction). PostgreSQL durations: '10s', '5min', '0' off.
    transaction_timeout is set only on servers that have it (PostgreSQL 17 and later)."""

    lock_timeout: str
    statement_timeout: str
    idle_in_transaction_session_timeout: str
    transaction_timeout: str

    def as_settings(self) -> dict[str, str]:
        return {
            "lock_timeout": self.lock_timeout,
            "statement_timeout": self.statement_timeout,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_session_timeout,
            "transaction_timeout": self.transaction_timeout,
        }


_LIMIT_DEFAULTS = {
    # Tenant transactions serve the router and the pipelines' per-tenant steps.
    "tenant": TransactionLimits(
        lock_timeout="10s",
        statement_timeout="15min",
        idle_in_transaction_session_timeout="5min",
        transaction_timeout="1h",
    ),
    # Maintenance jobs (seeding, cross-tenant rollups) move more rows at once.
    "maintenance": TransactionLimits(
        lock_timeout="1min",
        statement_timeout="1h",
        idle_in_transaction_session_timeout="10min",
        transaction_timeout="4h",
    ),
}


def transaction_limits(kind: str) -> TransactionLimits:
    """Limits for "tenant" or "maintenance" transactions; each overridable by
    CLAY_<KIND>_<SETTING>, e.g. CLAY_TENANT_LOCK_TIMEOUT=3s or CLAY_MAINTENANCE_STATEMENT_TIMEOUT=2h."""
    defaults = _LIMIT_DEFAULTS[kind].as_settings()
    values = {name: env(f"CLAY_{kind.upper()}_{name.upper()}") or value for name, value in defaults.items()}
    return TransactionLimits(**values)
