"""Building request messages from plain Python values (shared by both clients)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from client._gen.aihub.training.v1 import training_service_pb2 as pb

ConfigLike = Mapping[str, Any] | pb.TrainingConfig


def enum_value(enum: Any, value: str | int | None, field: str) -> Any:
    """ "high" / "HIGH" / 2 -> the enum's number (its ValueType); None/"" -> 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    # A value named with its enum's prefix (SCHEDULE_ACTION_FORECAST) is read by its short name too.
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"
    for name in (str(value).upper(), prefix + str(value).upper()):
        if name in enum.keys():  # noqa: SIM118 - a proto enum, not a dict
            return enum.Value(name)
    names = ", ".join(n.removeprefix(prefix).lower() for n in enum.keys() if not n.endswith("_UNSPECIFIED"))  # noqa: SIM118
    raise ValueError(f"{field}: {value!r} is not one of {names}")


def config(value: ConfigLike) -> pb.TrainingConfig:
    """A TrainingConfig from the guide's JSON shape (a dict) or a message."""
    if isinstance(value, pb.TrainingConfig):
        return value
    data = dict(value)
    if isinstance(data.get("model_type"), str):
        data["model_type"] = data["model_type"].upper()
    msg = pb.TrainingConfig()
    json_format.ParseDict(data, msg)  # unknown fields raise ParseError naming them
    return msg


def create(
    tenant_id: str,
    model_type: str,
    config_value: ConfigLike,
    *,
    priority: str | int | None = None,
    metadata: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> pb.CreateTrainingJobRequest:
    return pb.CreateTrainingJobRequest(
        tenant_id=tenant_id,
        model_type=enum_value(pb.ModelType, model_type, "model_type"),
        config=config(config_value),
        priority=enum_value(pb.Priority, priority, "priority"),
        metadata=dict(metadata or {}),
        request_id=request_id or "",
    )


def list_jobs(
    tenant_id: str | None = None,
    status: str | int | None = None,
    model_type: str | int | None = None,
    page_size: int = 0,
    page_token: str = "",
) -> pb.ListTrainingJobsRequest:
    return pb.ListTrainingJobsRequest(
        tenant_id=tenant_id or "",
        status=enum_value(pb.JobStatus, status, "status"),
        model_type=enum_value(pb.ModelType, model_type, "model_type"),
        page_size=page_size,
        page_token=page_token,
    )


def logs(job_id: str, follow: bool = True, after_sequence: int = 0) -> pb.StreamTrainingJobLogsRequest:
    return pb.StreamTrainingJobLogsRequest(job_id=job_id, follow=follow, after_sequence=after_sequence)


def import_file_chunks(tenant_id: str, table: str, path: Path, fmt: str | None, chunk_size: int, duplicates: str = ""):
    """A file's import messages, read chunk by chunk (memory holds one chunk)."""
    form = enum_value(pb.DataFormat, fmt, "format")
    with path.open("rb") as f:
        first = True
        while first or (part := f.read(chunk_size)):
            if first:
                yield pb.ImportFeatureDataRequest(
                    tenant_id=tenant_id, table=table, format=form, data=f.read(chunk_size), duplicates=duplicates
                )
                first = False
            else:
                yield pb.ImportFeatureDataRequest(data=part)


def import_chunks(tenant_id: str, table: str, data: bytes, fmt: str | None, chunk_size: int, duplicates: str = ""):
    form = enum_value(pb.DataFormat, fmt, "format")
    for i in range(0, max(len(data), 1), chunk_size):
        part = data[i : i + chunk_size]
        if i == 0:
            yield pb.ImportFeatureDataRequest(tenant_id=tenant_id, table=table, format=form, data=part, duplicates=duplicates)
        else:
            yield pb.ImportFeatureDataRequest(data=part)
