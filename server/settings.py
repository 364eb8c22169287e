"""Configuration, read from the environment once, by the entry point (server/__main__.py).

Every variable is listed in README.md. DATABASE_URL and RAY_ADDRESS keep their common
names; the rest carry the AIHUB_ prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIHUB_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "AIHUB_DATABASE_URL"),
        description="PostgreSQL to use; when unset, an embedded PostgreSQL is started in DATA_DIR/postgres.",
    )
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAY_ADDRESS", "AIHUB_RAY_ADDRESS"),
        description="Ray cluster to run jobs on; when unset, a local Ray is started.",
    )
    data_dir: Path = Field(default=Path(".data"), description="Embedded PostgreSQL, artifacts and Ray's temp files.")
    artifact_root: Path | None = Field(default=None, description="Where models are saved; default DATA_DIR/artifacts.")
    grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address (loopback only by default).")
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    rest: bool = Field(default=True, description="Start Envoy (REST via gRPC-JSON transcoding) next to the gRPC server.")
    http_host: str = Field(default="127.0.0.1", description="REST listen address (Envoy).")
    http_port: int = Field(default=8000, ge=1, le=65535, description="REST port (Envoy); the guide's API_URL.")
    max_concurrent_jobs: int = Field(default=0, ge=0, description="0: as many as the Ray cluster's CPUs allow.")
    job_cpus: int = Field(default=1, ge=1, description="CPUs (and LightGBM threads) for one job.")
    local_ray_cpus: int = Field(default=0, ge=0, description="CPUs of the local Ray; 0: all of this machine's.")
    poll_interval_seconds: float = Field(default=2.0, gt=0, description="Backstop queue poll; NOTIFY wakes at once.")
    lease_seconds: float = Field(default=30.0, gt=0, description="A running job's lease; renewed every third of it.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Automatic retries of a job whose failure may pass.")
    retry_base_seconds: float = Field(default=60.0, gt=0, description="First retry delay; doubles each time (1, 2, 4 min).")
    server_id: str | None = Field(default=None, description="This server's name in claimed_by; default host:pid.")
    log_level: str = Field(default="INFO", description="Log level of the server and of its Ray tasks.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one readable line each; json: one JSON object per line. Both carry job fields."
    )

    @field_validator("grpc_host")
    @classmethod
    def _loopback_unless_asked(cls, v: str) -> str:
        return v.strip() or "127.0.0.1"

    @property
    def artifacts(self) -> Path:
        return (self.artifact_root or self.data_dir / "artifacts").resolve()
