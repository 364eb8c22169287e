"""Python client of the AI Hub training service.

    from client import TrainingClient
    with TrainingClient("localhost:50051") as c:
        job = c.create_job("acme-corp", "forecast", config, priority="high")
        for entry in c.stream_logs(job.job_id):
            print(entry.message)

The generated messages are in ``client.pb`` (``client._gen`` holds the generated code).
"""

from client._client import AsyncTrainingClient, TrainingClient
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from client._gen.aihub.training.v1 import training_service_pb2_grpc as pb_grpc
from client.errors import (
    AIHubError,
    AlreadyExistsError,
    AuthenticationError,
    ConfigValidationError,
    DataLoadError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    ResourceError,
    UnavailableError,
)

__all__ = [
    "AIHubError",
    "AlreadyExistsError",
    "AsyncTrainingClient",
    "AuthenticationError",
    "ConfigValidationError",
    "DataLoadError",
    "InvalidStateError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "ResourceError",
    "TrainingClient",
    "UnavailableError",
    "pb",
    "pb_grpc",
]
