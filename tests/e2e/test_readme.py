"""The README's quick start and CLI examples, run as written against a real server (only the
port differs), with the example files that ship in examples/."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shlex
from pathlib import Path

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


def cli_lines() -> list[list[str]]:
    """The README's CLI example, one argument list per command."""
    text = (ROOT / "README.md").read_text()
    section = text.split("The same with the CLI", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line.split("  #", 1)[0]) for line in block.splitlines() if line.startswith("aihub ")]


async def test_readme_cli_examples_run_as_written_with_the_files_that_ship(app, capsys):
    from client.cli import main as aihub

    commands = cli_lines()
    assert len(commands) >= 5
    outputs = []
    for command in commands:
        args = [str(ROOT / a) if a.startswith("examples/") else a for a in command[1:]]
        for a in args:
            assert not a.startswith(str(ROOT / "examples")) or Path(a).is_file(), f"{a} is not shipped"
        code = await asyncio.wait_for(asyncio.to_thread(aihub, ["--target", f"127.0.0.1:{app.port}", *args]), 180)
        captured = capsys.readouterr()
        assert code == 0, (command, captured.out[-2000:], captured.err[-2000:])
        outputs.append(captured.out)
    assert "COMPLETED" in outputs[0]  # the guide's quick start, followed to its end
    assert "imported 744 rows" in outputs[1]
    assert outputs[3].count("COMPLETED") >= 1 and "my_load" not in captured.err
