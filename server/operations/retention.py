"""The retention sweep, on every server (each step is safe to run twice at once: rows are
deleted or marked by one statement each):

- model versions past their tenant's ``keep_versions`` (the newest N per model type stay, and
  every version marked ``keep``) are marked deleted, as DeleteModelVersion does, and their
  artifacts removed;
- log lines of jobs finished more than ``log_days`` ago, jobs finished more than ``job_days``
  ago that no model version comes from, and alerts sent or given up more than ``job_days``
  ago are deleted in batches of ``batch`` rows, a short transaction each.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from server.execution.artifacts import ArtifactPathError, ArtifactStore
from server.operations.periodic import Periodic
from storage import db, models, retention

log = logging.getLogger(__name__)


@dataclass
class Swept:
    versions: int = 0
    removed: dict[str, int] = field(default_factory=dict)


class RetentionSweep(Periodic):
    name = "retention"

    def __init__(
        self,
        engine: db.Engine,
        artifacts: ArtifactStore,
        *,
        interval: float = 3600.0,
        log_days: float = 0.0,
        job_days: float = 0.0,
        batch: int = 1000,
    ) -> None:
        self.engine = engine  # the dispatcher's role: every tenant
        self.artifacts = artifacts
        self.interval = interval
        self.log_days = log_days  # 0: keep log lines
        self.job_days = job_days  # 0: keep finished jobs
        self.batch = batch
        self.totals: dict[str, int] = {}  # what this server removed, for metrics

    async def run_pass(self) -> None:
        await self.sweep()

    async def sweep(self, now: datetime | None = None) -> Swept:
        now = now or datetime.now(UTC)
        swept = Swept()
        while True:
            async with db.transaction(self.engine) as conn:
                expired = await models.expire_versions(conn, limit=100)
            for version in expired:
                try:
                    await asyncio.to_thread(self.artifacts.remove_version, version.artifact_uri)
                except ArtifactPathError:
                    log.warning(
                        "retention: artifact %s of version %s is outside the artifact root; left alone",
                        version.artifact_uri,
                        version.model_id,
                    )
                log.info("retention: model version %s (v%d) removed: past keep_versions", version.model_id, version.version,
                         extra={"tenant_id": version.tenant_id})  # fmt: skip
            swept.versions += len(expired)
            if len(expired) < 100:
                break
        ages = {"log_lines": self.log_days, "jobs": self.job_days, "alert_deliveries": self.job_days}
        for what, days in ages.items():
            if days <= 0:
                continue
            before = now - timedelta(days=days)
            while True:
                async with db.transaction(self.engine) as conn:
                    n = await retention.prune_batch(conn, what, before, self.batch)
                swept.removed[what] = swept.removed.get(what, 0) + n
                if n < self.batch:
                    break
                await asyncio.sleep(0)  # let the server's other work in between batches
        for what, n in {"model_versions": swept.versions, **swept.removed}.items():
            self.totals[what] = self.totals.get(what, 0) + n
        if swept.versions or any(swept.removed.values()):
            log.info("retention sweep: %d versions, %s", swept.versions, ", ".join(f"{n} {w}" for w, n in swept.removed.items()))
        return swept
