"""The README's quick start, run as written against a real server (only the port differs)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="session")


def quick_start_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


async def test_readme_quick_start_trains_and_prints_mae_and_rmse(app):
    code = quick_start_code().replace("localhost:50051", f"127.0.0.1:{app.port}")
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README

    await asyncio.wait_for(asyncio.to_thread(run), 120)
    printed = out.getvalue()
    assert "Job created: " in printed
    assert "Status: COMPLETED" in printed
    assert re.search(r"MAE: \d+\.\d\d", printed) and re.search(r"RMSE: \d+\.\d\d", printed)
    assert "registration" in printed  # the streamed log lines came through
