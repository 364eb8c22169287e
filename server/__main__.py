"""Entry point: `python -m server [--seed-demo]`. Reads the environment (the only place
that does), starts embedded PostgreSQL when DATABASE_URL is unset, a local Ray when
RAY_ADDRESS is unset, serves gRPC, and runs Envoy for REST, until interrupted.

When it starts both PostgreSQL and Ray itself (and AIHUB_ISOLATE is on), the backend (they
and the gRPC server) runs as a child in a private network namespace (server/isolation.py):
Ray and the collective libraries of distributed training listen on every interface, which
there is only loopback. This process then runs only Envoy, on the host's loopback: REST on
AIHUB_HTTP_PORT and gRPC on AIHUB_GRPC_PORT, both passed to the backend over a Unix socket.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

from pydantic import ValidationError

from server import isolation, lifecycle, observability, private, replicas
from server.api.app import App
from server.settings import Settings

log = logging.getLogger("server")


async def serve(settings: Settings, *, seed_demo: bool) -> None:
    lifecycle.ensure_free(settings.grpc_host, settings.grpc_port, "AIHUB_GRPC_PORT")  # before anything starts
    if settings.metrics_unix_socket is None:
        lifecycle.ensure_free("127.0.0.1", settings.metrics_port, "AIHUB_METRICS_PORT")
    if settings.rest:
        lifecycle.ensure_free(settings.http_host, settings.http_port, "AIHUB_HTTP_PORT (REST)")
    pg = None
    url = settings.database_url
    if not url:
        from storage.embedded import EmbeddedPostgres

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        pg = EmbeddedPostgres((settings.data_dir / "postgres").resolve())
        url = await asyncio.to_thread(pg.start)
    app = App(settings, url)
    await app.start()
    envoy = None
    if settings.rest:
        from server.api.envoy import Envoy

        envoy = Envoy(grpc_port=app.port, http_port=settings.http_port, http_host=settings.http_host)
        envoy.launch()  # from this (the main) thread: Envoy dies with it, even on kill -9
        await asyncio.to_thread(envoy.wait_ready)
    if seed_demo:
        from server import seed

        await seed.seed_demo(app.engine)
    lifecycle.tune_gc()
    stop, now = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (now if stop.is_set() else stop).set()  # a second signal: stop without waiting for the drain

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if settings.grpc_unix_socket is not None:
        print(f"AI Hub Training backend ready on {settings.grpc_unix_socket} (in its own network namespace)", flush=True)
    else:
        replicas.banner(settings, f"{settings.grpc_host}:{app.port}", envoy.url if envoy else None)
    await stop.wait()
    log.info("stopping: draining for up to %.0f s (a second Ctrl-C stops at once)", settings.drain_seconds)
    drain = asyncio.ensure_future(app.drain(settings.drain_seconds))
    await asyncio.wait([drain, asyncio.ensure_future(now.wait())], return_when=asyncio.FIRST_COMPLETED)
    drain.cancel()
    log.info("stopping")
    if envoy is not None:
        envoy.stop()
    await app.stop()
    if app.executor is not None:
        app.executor.stop()
    if pg is not None:
        pg.stop()


def _isolated_backend(settings: Settings) -> bool:
    """Whether to run the backend in a private network namespace: this server starts
    PostgreSQL and Ray itself, is not in such a namespace already, may, and can (a system
    without user namespaces runs it as before, with a warning)."""
    if not settings.isolate or settings.database_url is not None or settings.ray_address is not None or isolation.isolated():
        return False
    probe = subprocess.run([sys.executable, "-m", "server.isolation", "--", "true"], capture_output=True, text=True, check=False)
    if probe.returncode:
        log.warning(
            "cannot run the backend in a private network namespace (%s); running it here: distributed training opens "
            "sockets on every interface, and AIHUB_LOCAL_RAY_NODES > 1 is refused",
            probe.stderr.strip() or probe.returncode,
        )
        return False
    return True


def front(settings: Settings, argv: list[str], secrets: dict[str, str]) -> int:
    """Run the backend isolated (a child), and Envoy here in front of it; returns the exit
    code. Ctrl-C or SIGTERM stops both."""

    run_dir = (settings.data_dir / "run").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    upstreams = replicas.sockets(run_dir, settings.replicas)
    sock = upstreams[0]
    for path in upstreams:
        path.unlink(missing_ok=True)
    metrics = replicas.metrics_sockets(run_dir, settings.replicas)
    env = {**os.environ, "AIHUB_GRPC_UNIX_SOCKET": str(sock), "AIHUB_METRICS_UNIX_SOCKET": str(metrics[0]), "AIHUB_REST": "false"}
    command = [sys.executable, "-m", "server.isolation", "--", sys.executable, "-m", "server", *argv]
    # Its own process group: a terminal's Ctrl-C reaches only this process, which passes one
    # SIGTERM on (a second signal would mean "stop without draining").
    passed = private.pipe_to_child(secrets, env)
    try:
        command, preexec = lifecycle.dying_with_parent(command)
        child = subprocess.Popen(command, env=env, process_group=0, pass_fds=(passed,), preexec_fn=preexec)  # noqa: PLW1509 - prctl only
    finally:
        os.close(passed)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    while not replicas.accepts(sock):
        if child.poll() is not None:
            return child.returncode or 1
        if stop:
            return child.wait()
        time.sleep(0.2)
    envoy = replicas.front_envoy(settings, upstreams, metrics)
    try:
        try:
            envoy.start()
        except lifecycle.PortInUse as exc:
            log.error("%s", exc)
            return 1
        replicas.banner(
            settings, f"{settings.grpc_host}:{settings.grpc_port}", envoy.url if settings.rest else None, replicas=len(upstreams)
        )
        print("  (PostgreSQL, Ray and the gRPC server run in a private network namespace; Envoy is their only way in)", flush=True)
        while child.poll() is None:
            time.sleep(0.5)
    finally:
        envoy.stop()
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(settings.drain_seconds + 90)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0 if stop else (child.returncode or 0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--seed-demo", action="store_true", help="load the demo data for acme-corp once")
    args = parser.parse_args()
    private.read_passed()
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise SystemExit(f"python -m server: invalid settings: {problems}") from None
    # Nothing this process starts inherits a secret, and what they write is private (server/private.py).
    secrets = private.take()
    private.restrict()
    private.private_dir(settings.data_dir)
    observability.configure(settings.log_format, settings.log_level)
    if _isolated_backend(settings):
        raise SystemExit(front(settings, sys.argv[1:], secrets))
    if settings.replicas > 1:
        try:
            supervisor = replicas.Supervisor(settings, seed_demo=args.seed_demo, envoy=settings.grpc_unix_socket is None, secrets=secrets)
            raise SystemExit(supervisor.run())
        except lifecycle.PortInUse as exc:
            raise SystemExit(f"python -m server: {exc}") from None
    if settings.local_ray_nodes > 1 and not isolation.isolated():
        raise SystemExit(
            "python -m server: AIHUB_LOCAL_RAY_NODES > 1 needs the backend in a private network namespace "
            "(leave DATABASE_URL, RAY_ADDRESS and AIHUB_ISOLATE unset)"
        )
    try:
        asyncio.run(serve(settings, seed_demo=args.seed_demo))
    except lifecycle.PortInUse as exc:
        raise SystemExit(f"python -m server: {exc}") from None


if __name__ == "__main__":
    main()
