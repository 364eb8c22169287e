"""Configuration, read from the environment once, by the entry point (server/__main__.py).

Every field's description is its documentation: docs/configuration.md's table is generated
from them when the docs are built (scripts/docs_hooks.py). DATABASE_URL and RAY_ADDRESS keep
their common names; the rest carry the AIHUB_ prefix.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainers.spec.resources import parse_memory


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIHUB_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "AIHUB_DATABASE_URL"),
        description="PostgreSQL to use; when unset, an embedded PostgreSQL is started in DATA_DIR/postgres.",
    )
    service_database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AIHUB_SERVICE_DATABASE_URL"),
        description="A LOGIN role for requests and jobs (granted aihub_service, owning nothing); DATABASE_URL (the "
        "owner) then runs only migrations and the dispatcher. Unset: everything uses DATABASE_URL.",
    )
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAY_ADDRESS", "AIHUB_RAY_ADDRESS"),
        description="Ray cluster to run jobs on; when unset, a local Ray is started.",
    )
    data_dir: Path = Field(default=Path(".data"), description="Embedded PostgreSQL, artifacts and Ray's temp files.")
    artifact_root: Path | None = Field(
        default=None, description="Where models are saved (reachable from every Ray node); default DATA_DIR/artifacts."
    )
    grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address (loopback only by default).")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    rest: bool = Field(default=True, description="Start Envoy (REST via gRPC-JSON transcoding) next to the gRPC server.")
    http_host: str = Field(default="127.0.0.1", description="REST listen address (Envoy).")
    http_port: int = Field(default=8000, ge=1, le=65535, description="REST port (Envoy); the guide's API_URL.")
    max_concurrent_jobs: int = Field(
        default=0, ge=0, description="A cap on running jobs; 0: as many as the cluster's free resources allow."
    )
    job_cpus: int = Field(default=1, ge=1, description="CPUs (and LightGBM threads) for one job.")
    local_ray_cpus: int = Field(default=0, ge=0, description="CPUs of the local Ray; 0: all of this machine's.")
    ray_reconnect_seconds: float = Field(
        default=5.0, gt=0, description="How often a new Ray driver is started while the cluster's head is unreachable."
    )
    ship_code: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Ship our packages and the installed preprocessors to the Ray nodes with the jobs (Ray's runtime "
        "environment), so a node needs only Ray and the libraries: auto (when RAY_ADDRESS names a cluster), always, never.",
    )
    local_ray_nodes: int = Field(
        default=1, ge=1, le=8, description="Nodes of the local Ray: 2 or more start a local multi-node cluster (CPUs shared out)."
    )
    isolate: bool = Field(
        default=True,
        description="When this server starts PostgreSQL and Ray itself, run them and the gRPC server in a private "
        "network namespace (only Envoy outside), since Ray and distributed training listen on every interface.",
    )
    grpc_unix_socket: Path | None = Field(
        default=None, description="Also serve gRPC on this Unix socket (set by python -m server for its isolated backend)."
    )
    poll_interval_seconds: float = Field(default=2.0, gt=0, description="Backstop queue poll; NOTIFY wakes at once.")
    lease_seconds: float = Field(
        default=30.0, gt=0, description="A running job's lease, renewed every third of it; an expired lease requeues the job."
    )
    max_retries: int = Field(default=3, ge=0, le=20, description="Automatic retries of a job whose failure may pass.")
    max_lost_leases: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Requeues of a job whose server was lost while it ran (its lease expired); once more and it FAILS "
        "(WorkerLost). Not counted in AIHUB_MAX_RETRIES.",
    )
    reserved_slots: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Job slots a tenant already running a job may not take: kept for a tenant running none, so its job "
        "starts at once while another tenant's long jobs fill the rest. Default: 1 on a cluster of 4 or more slots, else 0.",
    )
    drain_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM: how long running jobs may finish (health NOT_SERVING, no new claims) before the rest "
        "are handed back to the queue (which does not use a retry).",
    )
    default_max_runtime_seconds: int = Field(
        default=86400, ge=1, description="A job's time limit when its config sets no max_runtime_seconds; past it: FAILED (Timeout)."
    )
    job_memory: str | None = Field(
        default=None,
        description='Memory one single-node job may use, e.g. "4GB": its attempt\'s resident memory is sampled and, once '
        'over it, the job FAILS with OutOfMemory naming the remedies ("distributed": true, more memory, use_sample) '
        "instead of being killed by the node. Unset: no limit of ours (Ray's memory monitor still ends a task whose node "
        "runs low). A distributed job's workers are held to their ray_config.memory_per_worker instead.",
    )
    max_runtime_cap_seconds: int = Field(
        default=604800, ge=1, description="The largest max_runtime_seconds a job may ask for (a larger one is refused at create)."
    )
    stall_warning_seconds: float = Field(
        default=600.0, gt=0, description="A running job whose progress has not moved this long gets a WARNING (server log and job log)."
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=8,
        description="python -m server: run this many gRPC servers on one database behind one Envoy (health-checked, balanced).",
    )
    retry_base_seconds: float = Field(default=60.0, gt=0, description="First retry delay; doubles each time (1, 2, 4 min).")
    server_id: str | None = Field(default=None, description="This server's name in claimed_by; default host:pid.")
    log_level: str = Field(default="INFO", description="Log level of the server and of its Ray tasks.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one readable line each; json: one JSON object per line. Both carry job fields."
    )

    auth: Literal["off", "required"] = Field(
        default="required",
        description="required: every call needs an API key (authorization: Bearer <key>); "
        "off: no key needed, the tenant comes from the request (loopback listeners only; `make run` uses it).",
    )
    bootstrap_admin_key: str | None = Field(
        default=None, repr=False, description="An admin key made sure to exist (and not be revoked) at start-up; 32+ characters."
    )
    auth_failed_lookups_burst: int = Field(
        default=100, ge=1, description="Failed API key lookups (unknown, revoked, expired) one client may make at once; "
        "past it, its unknown keys get 429 RateLimited until the bucket refills."
    )  # fmt: skip
    auth_failed_lookups_per_minute: float = Field(
        default=60.0, gt=0, description="How fast a client's failed-lookup allowance refills (lookups per minute)."
    )
    max_streams_per_key: int = Field(
        default=0, ge=0, description="Log and watch streams one API key may hold open on one server; 0: half of its "
        "tenant's max_open_streams (at least one)."
    )  # fmt: skip
    cluster_refresh_seconds: float = Field(
        default=10.0, gt=0, description="How often the Ray cluster's nodes and resources are recorded in the cluster registry."
    )
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Server-side deadline of each unary call (DEADLINE_EXCEEDED, HTTP 504)."
    )
    long_request_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Server-side deadline of the long calls: evaluate a model, import feature data."
    )

    # --- running unattended (issue 12) ---------------------------------------------------------
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Prometheus metrics at http://127.0.0.1:PORT/metrics (replica i of "
        "AIHUB_REPLICAS: PORT+i); 0: a free port (tests)."
    )  # fmt: skip
    metrics_unix_socket: Path | None = Field(
        default=None, description="Serve /metrics on this Unix socket instead (set by python -m server for a backend behind Envoy)."
    )
    metrics_tenant_labels: bool = Field(
        default=False,
        description="Give aihub_jobs a tenant label (tenant names in /metrics, which any local process can read); off: summed.",
    )
    metrics_max_tenants: int = Field(
        default=50, ge=1, le=10000, description="With tenant labels, this many tenants get one; the rest are summed as _other."
    )
    scheduler_interval_seconds: float = Field(default=1.0, gt=0, description="How often each server looks for due schedules.")
    alert_retry_base_seconds: float = Field(
        default=10.0, gt=0, description="A failed webhook delivery is tried again after this long, doubling each time."
    )
    alert_max_attempts: int = Field(default=8, ge=1, le=50, description="Tries of one webhook delivery before it is FAILED.")
    alert_allow_private_targets: bool = Field(
        default=False, description="Allow webhooks to loopback, private and link-local addresses (refused by default: SSRF)."
    )
    public_url: str = Field(
        default="", description="The REST base URL alert links start with; default http://AIHUB_HTTP_HOST:AIHUB_HTTP_PORT."
    )
    retention_interval_seconds: float = Field(default=3600.0, gt=0, description="How often the retention sweep runs.")
    retention_log_days: float = Field(
        default=30.0, ge=0, description="Delete the log lines of jobs finished this many days ago (0: keep them)."
    )
    retention_job_days: float = Field(
        default=90.0, ge=0, description="Delete jobs finished this many days ago that no model version comes from, and old "
        "alert deliveries (0: keep them)."
    )  # fmt: skip
    retention_batch_rows: int = Field(default=1000, ge=1, le=100000, description="Rows one retention statement deletes at most.")
    mlflow_tracking_uri: str = Field(
        default="",
        description="Where jobs with mlflow_tracking log (any MLflow tracking URI: http(s)://, sqlite:///, databricks); "
        "default: a local store, DATA_DIR/mlruns/mlflow.db with its artifacts in DATA_DIR/mlruns/artifacts.",
    )

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Self:
        if self.auth == "off":
            exposed = [h for h in (self.grpc_host, *([self.http_host] if self.rest else [])) if not _loopback(h)]
            if exposed:
                raise ValueError(
                    f"AIHUB_AUTH=off is allowed only when every listener is on loopback; {', '.join(exposed)} is not. "
                    "Use AIHUB_AUTH=required (and API keys) to listen elsewhere."
                )
        if self.default_max_runtime_seconds > self.max_runtime_cap_seconds:
            raise ValueError("AIHUB_DEFAULT_MAX_RUNTIME_SECONDS must not exceed AIHUB_MAX_RUNTIME_CAP_SECONDS")
        if self.bootstrap_admin_key is not None and len(self.bootstrap_admin_key) < 32:
            raise ValueError("AIHUB_BOOTSTRAP_ADMIN_KEY must be at least 32 characters")
        return self

    @field_validator("job_memory")
    @classmethod
    def _a_memory_size(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        parse_memory(v.strip())  # ValueError naming the form
        return v.strip()

    @property
    def job_memory_bytes(self) -> int:
        return parse_memory(self.job_memory) if self.job_memory else 0

    @field_validator("grpc_host")
    @classmethod
    def _loopback_unless_asked(cls, v: str) -> str:
        return v.strip() or "127.0.0.1"

    @property
    def alert_base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    @property
    def artifacts(self) -> Path:
        return (self.artifact_root or self.data_dir / "artifacts").resolve()


def _loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
