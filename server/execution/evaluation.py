"""Scoring a registered model version on another window, as a Ray task."""

from __future__ import annotations

from dataclasses import dataclass

from server.execution.artifacts import ArtifactStore
from server.execution.executor import Executor
from server.execution.payloads import EvaluatePayload, TaskSettings
from storage.records import ModelVersion
from trainers.spec import TrainingSpec


@dataclass(frozen=True)
class ModelEvaluator:
    executor: Executor
    artifacts: ArtifactStore
    task_settings: TaskSettings

    async def evaluate(self, version: ModelVersion, spec: TrainingSpec) -> dict[str, float]:
        """The version's metrics on ``spec``'s window (its training spec, another window);
        raises the task's error (e.g. DataLoadError)."""
        payload = EvaluatePayload(
            tenant_id=version.tenant_id,
            spec=spec,
            artifact_path=str(self.artifacts.model_file(version.artifact_uri)),
            trained_metrics=version.metrics,
            settings=self.task_settings,
        )
        return await self.executor.evaluate(payload)
