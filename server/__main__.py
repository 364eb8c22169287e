"""Entry point: `python -m server [--seed-demo]`. Reads the environment (the only place
that does), starts embedded PostgreSQL when DATABASE_URL is unset, a local Ray when
RAY_ADDRESS is unset, serves gRPC, and runs Envoy for REST, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from pydantic import ValidationError

from server import observability
from server.api.app import App
from server.settings import Settings

log = logging.getLogger("server")


async def serve(settings: Settings, *, seed_demo: bool) -> None:
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
        await asyncio.to_thread(envoy.start)
    if seed_demo:
        from server import seed

        await seed.seed_demo(app.engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rest = f", REST on {envoy.url}" if envoy else ""
    mode = "authentication OFF (loopback only; AIHUB_AUTH=required to turn it on)" if settings.auth == "off" else "API keys required"
    print(f"AI Hub Training: gRPC on {settings.grpc_host}:{app.port}{rest}; {mode}. Ctrl-C to stop.", flush=True)
    await stop.wait()
    log.info("stopping")
    if envoy is not None:
        envoy.stop()
    await app.stop()
    if app.executor is not None:
        app.executor.stop()
    if pg is not None:
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--seed-demo", action="store_true", help="load the demo data for acme-corp once")
    args = parser.parse_args()
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise SystemExit(f"python -m server: invalid settings: {problems}") from None
    observability.configure(settings.log_format, settings.log_level)
    asyncio.run(serve(settings, seed_demo=args.seed_demo))


if __name__ == "__main__":
    main()
