"""Logs a machine can read: every line about a job carries ``job_id``, ``tenant_id``,
``attempt`` and ``step`` as fields, in the server process and in Ray tasks.

Code that works on a job binds the fields for its duration (``with job_fields(...)``, or
``bind`` inside it); a filter on the handler puts the bound fields on every record, and
``extra={...}`` may name them for a single line. ``AIHUB_LOG_FORMAT=json`` prints one
JSON object per line; the default text format appends the fields in brackets.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
FIELDS = ("job_id", "tenant_id", "attempt", "step")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("aihub_log_fields", default={})  # noqa: B039 - never mutated


@contextlib.contextmanager
def job_fields(**fields: Any) -> Iterator[None]:
    """Bind job fields to every log line written in this context (this task or thread)."""
    token = _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


def bind(**fields: Any) -> None:
    """Change bound fields in the current context (e.g. the step a task moved to); the
    enclosing ``job_fields`` block restores what was there before it."""
    _fields.set({**_fields.get(), **fields})


class JobFieldsFilter(logging.Filter):
    """Puts the bound job fields on each record (a field given with ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _fields.get()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, bound.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job fields that are set,
    and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual text line, with the job fields that are set appended in brackets."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        present = [f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, None) is not None]
        if not present:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} [{' '.join(present)}]{sep}{tail}"


def make_handler(fmt: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobFieldsFilter())
    handler.set_name(f"aihub-{fmt}")
    return handler


def configure(
    fmt: LogFormat = "text", level: str | int = "INFO", *, loggers: tuple[str, ...] = ("",), stream: TextIO | None = None
) -> None:
    """Send the given loggers (default: the root logger) to one handler of this format,
    replacing a handler an earlier call installed. In a Ray worker process only our own
    loggers are configured (``loggers=("server", "trainers")``), leaving Ray's alone."""
    for name in loggers:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if (h.get_name() or "").startswith("aihub-")]:
            logger.removeHandler(old)
        logger.addHandler(make_handler(fmt, stream))
        logger.setLevel(level)
        if name:
            logger.propagate = False
