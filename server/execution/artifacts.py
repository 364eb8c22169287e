"""The artifact layout, in one place: where a model's files are written, read and deleted.

``<root>/<tenant_id>/<model_type>/<job_id>-attempt<n>/<the library's model file>``. Every
path this store hands out or acts on is resolved and must lie inside the root; anything
else (a tenant id with ``..`` or ``/`` in it, an artifact URI pointing elsewhere) is refused
with ArtifactPathError, never written, read or deleted. The root must be a folder every Ray
node sees (the same path on each).
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from storage.tenancy import TENANT_ID_PATTERN
from trainers.errors import TrainingError, shown

_SLUG = re.compile(TENANT_ID_PATTERN)  # tenant ids and model types: slugs, never "..", "/" or "\\"


class ArtifactPathError(TrainingError):
    """A model path that would leave the artifact root."""

    reason = "InvalidArtifactPath"
    retryable = False


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved == self.root or not resolved.is_relative_to(self.root):
            raise ArtifactPathError(f"the model path {str(path)!r} is outside the artifact root", details={"root": str(self.root)})
        return resolved

    def attempt_folder(self, tenant_id: str, model_type: str, job_id: uuid.UUID, attempt: int) -> Path:
        """The folder of one attempt's model (not created)."""
        for part in (tenant_id, model_type):
            if not _SLUG.fullmatch(part or ""):
                raise ArtifactPathError(f"{shown(part)} cannot name a folder under the artifact root")
        return self._inside(self.root / tenant_id / model_type / f"{job_id}-attempt{attempt}")

    def create_attempt_folder(self, tenant_id: str, model_type: str, job_id: uuid.UUID, attempt: int) -> Path:
        folder = self.attempt_folder(tenant_id, model_type, job_id, attempt)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove_attempt_folder(self, tenant_id: str, model_type: str, job_id: uuid.UUID, attempt: int) -> None:
        """An attempt that did not complete leaves no files."""
        shutil.rmtree(self.attempt_folder(tenant_id, model_type, job_id, attempt), ignore_errors=True)

    def uri(self, model_file: Path) -> str:
        """The URI stored with a model version."""
        return self._inside(model_file).as_uri()

    def model_file(self, artifact_uri: str) -> Path:
        """The model file a stored URI names, checked to lie inside the root."""
        parsed = urlparse(artifact_uri)
        if parsed.scheme != "file":
            raise ArtifactPathError(f"{artifact_uri!r} is not a file URI under the artifact root")
        return self._inside(Path(parsed.path))

    def beside_model(self, artifact_uri: str, name: str) -> Path:
        """A file kept in a model version's folder (e.g. its predictions), checked to lie inside the root."""
        return self._inside(self.model_file(artifact_uri).parent / name)

    def remove_version(self, artifact_uri: str) -> Path:
        """Delete a model version's folder (the model file's folder); returns the file."""
        model_file = self.model_file(artifact_uri)
        shutil.rmtree(self._inside(model_file.parent), ignore_errors=True)  # never the root itself
        return model_file
