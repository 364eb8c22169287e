"""Logs a machine can read: job fields on every line, JSON with AIHUB_LOG_FORMAT=json."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import pytest

from server import observability
from server.settings import Settings


@pytest.fixture
def capture():
    """A logger "aihub-test" sent through our handler into a buffer, in a given format."""
    logger = logging.getLogger("aihub-test")
    made = []

    def make(fmt: str) -> io.StringIO:
        buf = io.StringIO()
        observability.configure(fmt, "DEBUG", loggers=("aihub-test",), stream=buf)
        made.append(buf)
        return buf

    yield make
    for h in list(logger.handlers):
        logger.removeHandler(h)


def test_json_lines_carry_the_bound_job_fields(capture):
    buf = capture("json")
    log = logging.getLogger("aihub-test")
    log.info("outside any job")
    with observability.job_fields(job_id="j-1", tenant_id="acme-corp", attempt=2):
        log.info("claimed")
        observability.bind(step="training")
        log.warning("round %d", 7)
    log.info("after")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [ln["message"] for ln in lines] == ["outside any job", "claimed", "round 7", "after"]
    assert "job_id" not in lines[0] and "job_id" not in lines[3]  # the fields end with the block
    assert lines[1] | {"time": None} == {
        "time": None, "level": "INFO", "logger": "aihub-test", "message": "claimed",
        "job_id": "j-1", "tenant_id": "acme-corp", "attempt": 2,
    }  # fmt: skip
    assert lines[2]["step"] == "training" and lines[2]["level"] == "WARNING" and lines[2]["attempt"] == 2


def test_extra_names_a_field_for_one_line_and_exceptions_stay_one_object(capture):
    buf = capture("json")
    log = logging.getLogger("aihub-test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"job_id": "j-9"})
    (line,) = buf.getvalue().splitlines()
    out = json.loads(line)
    assert out["job_id"] == "j-9" and "ValueError: boom" in out["exception"]


def test_text_lines_append_the_fields(capture):
    buf = capture("text")
    with observability.job_fields(job_id="j-1", attempt=1):
        logging.getLogger("aihub-test").info("hello")
    assert buf.getvalue().rstrip().endswith("aihub-test: hello [job_id=j-1 attempt=1]")


def test_fields_follow_asyncio_tasks_and_stay_out_of_other_threads(capture):
    buf = capture("json")
    log = logging.getLogger("aihub-test")

    async def job(n: int) -> None:
        with observability.job_fields(job_id=f"j-{n}"):
            await asyncio.sleep(0.01 * (3 - n))
            log.info("done %d", n)

    async def main() -> None:
        await asyncio.gather(*(job(n) for n in range(3)))

    asyncio.run(main())
    with observability.job_fields(job_id="outer"):
        t = threading.Thread(target=lambda: log.info("from a plain thread"))
        t.start()
        t.join()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert {ln["message"]: ln.get("job_id") for ln in lines} == {
        "done 0": "j-0", "done 1": "j-1", "done 2": "j-2", "from a plain thread": None,
    }  # fmt: skip


def test_the_format_is_a_setting_with_two_values(monkeypatch):
    monkeypatch.setenv("AIHUB_LOG_FORMAT", "json")
    assert Settings(_env_file=None).log_format == "json"
    monkeypatch.setenv("AIHUB_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings(_env_file=None)
