"""Secrets and files kept to the service's user.

- **Secrets leave the environment.** A process's environment is inherited by everything it
  starts (Envoy, the embedded PostgreSQL, Ray's raylet, GCS, dashboard and job workers) and
  is readable in ``/proc/<pid>/environ`` by the same user for the process's whole life. So the
  entry point reads its settings, then takes the secret variables out of ``os.environ``
  (:func:`take`) before it starts anything. Our own children that need them (the isolated
  backend, the replicas) get them through an inherited pipe (:func:`pipe_to_child`), read once
  at start-up and closed: nothing of theirs is in any environment either.
- **Files are private.** The entry point sets a ``0077`` umask (files ``0600``, folders
  ``0700``), inherited by every process it starts, so model files, Ray's session folder (job
  log lines of every tenant) and our logs are readable only by the service's user; the data
  folder, the artifact root and Ray's temp folder are also made ``0700`` explicitly
  (:func:`private_dir`), which holds even where a library sets its own modes inside them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Every setting that is a secret (or may hold one: a database URL with its password).
SECRET_VARIABLES = (
    "AIHUB_BOOTSTRAP_ADMIN_KEY",
    "DATABASE_URL",
    "AIHUB_DATABASE_URL",
    "AIHUB_SERVICE_DATABASE_URL",
    "AIHUB_MLFLOW_TRACKING_URI",
)
SECRETS_FD = "AIHUB_SECRETS_FD"  # the inherited pipe a parent of ours wrote the secrets to
UMASK = 0o077


def read_passed() -> None:
    """Put the secrets a parent passed by pipe into ``os.environ`` for the settings to read
    (:func:`take` removes them again once they are read)."""
    fd = os.environ.pop(SECRETS_FD, None)
    if not fd:
        return
    with os.fdopen(int(fd), "rb") as f:
        passed = json.loads(f.read() or b"{}")
    for name, value in passed.items():
        if name in SECRET_VARIABLES and isinstance(value, str):
            os.environ[name] = value


def take() -> dict[str, str]:
    """Remove every secret variable from ``os.environ``; returns them (for a child of ours
    that needs them, through :func:`pipe_to_child`)."""
    return {name: value for name in SECRET_VARIABLES if (value := os.environ.pop(name, None)) is not None}


def pipe_to_child(secrets: dict[str, str], env: dict[str, str]) -> int:
    """Write ``secrets`` to a new pipe whose read end the child inherits (pass it in
    ``Popen(pass_fds=...)`` and close it after the start); ``env`` gains its number. The
    variables themselves are removed from ``env``."""
    for name in SECRET_VARIABLES:
        env.pop(name, None)
    data = json.dumps(secrets).encode()
    read, write = os.pipe()
    try:
        if len(data) > 60_000:  # a pipe's buffer holds 64 KiB: more would block this write
            raise ValueError("the secret settings are too large to pass to a child (over 60 KB)")
        os.write(write, data)
    finally:
        os.close(write)
    env[SECRETS_FD] = str(read)
    return read


def restrict() -> None:
    """Files this process and its children create are private to the service's user."""
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """``path`` exists and is a folder only its owner may enter (``0700``)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
