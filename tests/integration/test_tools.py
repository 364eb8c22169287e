"""`alembic upgrade head` on an empty database, and the aihub CLI against a server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import pytest

from client import AsyncTrainingClient, pb
from client.cli import main as aihub
from storage import db
from tests.conftest import ROOT, empty_database, slow_config, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_alembic_upgrade_head_on_an_empty_database(pg_url):
    url = await empty_database(pg_url, "empty_for_alembic")
    env = {**os.environ, "DATABASE_URL": db.async_url(url)}
    alembic = os.path.join(os.path.dirname(sys.executable), "alembic")
    result = await asyncio.to_thread(subprocess.run, [alembic, "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    schemas = {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
    await conn.close()
    assert {"training_jobs", "job_attempts", "job_logs", "job_metrics", "model_versions", "ray_clusters", "worker_nodes"} <= tables
    assert "features" not in schemas  # feature data lives in one schema per tenant (migration 0006)


async def test_cli_import_create_watch_logs(app, tmp_path, capsys):
    target = f"127.0.0.1:{app.port}"
    csv = tmp_path / "load.csv"
    csv.write_text(
        "timestamp,load,temperature\n"
        + "".join(f"2024-05-{1 + h // 24:02d}T{h % 24:02d}:00:00,{100 + h % 24},{12.5}\n" for h in range(24 * 20))
    )

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = aihub(["--target", target, *args])
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(run, "data", "import", "--tenant", "hooli", "--table", "load_forecasting", str(csv))
    assert code == 0 and "imported 480 rows" in out
    body = tmp_path / "job.json"
    body.write_text(
        json.dumps(
            {
                "tenant_id": "hooli",
                "model_type": "forecast",
                "priority": "high",
                "config": tiny_config(
                    training_start="2024-05-01T00:00:00",
                    training_end="2024-05-20T23:00:00",
                    features=["temperature", "hour_of_day", "load_lag_24"],
                ),
            }
        )
    )
    code, out = await asyncio.to_thread(run, "jobs", "create", "--config", str(body))
    assert code == 0
    job_id = json.loads(out)["job_id"]
    code, out = await asyncio.to_thread(run, "jobs", "watch", job_id)
    assert code == 0 and "COMPLETED 100%" in out and out.strip().splitlines()[-1] == "model version 1"
    code, out = await asyncio.to_thread(run, "jobs", "logs", job_id)
    assert code == 0 and "registration" in out and "job completed" in out
    code, out = await asyncio.to_thread(run, "jobs", "list", "--tenant", "hooli")
    assert code == 0 and job_id in out
    code, out = await asyncio.to_thread(run, "jobs", "retry", job_id)
    assert code == 1  # COMPLETED jobs are not retried
    code, out = await asyncio.to_thread(run, "jobs", "metrics", job_id)
    assert code == 0 and json.loads(out)["mae"] > 0

    # A reader that went away (`aihub ... | head`) is not an input error: no message, a pipe's exit code.
    def into_a_closed_pipe() -> tuple[int, bytes]:
        command = [sys.executable, "-m", "client.cli", "--target", target, "--output", "json", "jobs", "get", job_id]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # before it writes anything
        err = proc.stderr.read()
        return proc.wait(60), err

    code, err = await asyncio.to_thread(into_a_closed_pipe)
    assert code == 141 and err == b"", err
    # A refused request's violation is said once.
    capsys.readouterr()
    assert await asyncio.to_thread(aihub, ["--target", target, "jobs", "get", "nonexistent"]) == 1
    said = capsys.readouterr().err
    assert "job_id" in said and len(said.split("job_id")) == 2, said
    code, out = await asyncio.to_thread(run, "models", "list", "--tenant", "hooli")
    assert code == 0 and " v1 " in out and job_id in out
    model_id = out.split()[0]
    code, out = await asyncio.to_thread(
        run, "models", "evaluate", model_id, "--start", "2024-05-10T00:00:00", "--end", "2024-05-20T23:00:00"
    )
    assert code == 0 and json.loads(out)["metrics"]["evaluation_rows"] == 11 * 24


async def test_cli_schedules_alerts_and_keep(start_app, database_url, demo_frame, tmp_path, capsys):
    from tests.conftest import load_demo

    await load_demo(database_url, demo_frame)
    app = await start_app(alert_allow_private_targets=True)
    target = f"127.0.0.1:{app.port}"

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = aihub(["--target", target, *args])
        return code, capsys.readouterr().out

    body = tmp_path / "scheduled.json"  # the guide's "Scheduled Training" body
    body.write_text(json.dumps({"tenant_id": "acme-corp", "model_type": "forecast", "schedule": "0 2 * * 0", "config": tiny_config()}))
    code, out = await asyncio.to_thread(run, "schedules", "create", "--config", str(body), "--timezone", "Europe/Berlin")
    assert code == 0, out
    made = json.loads(out)
    assert made["schedule"] == "0 2 * * 0" and made["timezone"] == "Europe/Berlin" and made["priority"] == "HIGH"
    sid = made["schedule_id"]
    code, out = await asyncio.to_thread(run, "schedules", "list", "--tenant", "acme-corp")
    assert code == 0 and [s["schedule_id"] for s in json.loads(out)] == [sid]
    code, out = await asyncio.to_thread(run, "schedules", "run", sid)
    job_id = json.loads(out)["job"]["job_id"]
    code, out = await asyncio.to_thread(run, "jobs", "watch", job_id)
    assert code == 0
    code, out = await asyncio.to_thread(run, "jobs", "list", "--schedule", sid)
    assert code == 0 and job_id in out
    code, out = await asyncio.to_thread(run, "schedules", "pause", sid)
    assert json.loads(out)["paused"] is True
    code, out = await asyncio.to_thread(run, "schedules", "get", sid)
    assert json.loads(out)["recent_jobs"][0]["job_id"] == job_id
    code, out = await asyncio.to_thread(run, "models", "list", "--tenant", "acme-corp")
    model_id = out.split()[0]
    code, out = await asyncio.to_thread(run, "models", "keep", model_id)
    assert code == 0 and json.loads(out)["keep"] is True
    code, out = await asyncio.to_thread(run, "tenants", "set", "acme-corp", "--keep-versions", "3")
    assert code == 0 and json.loads(out)["keep_versions"] == 3
    hook = ["--url", "http://127.0.0.1:9/hook", "--event", "job_failed"]
    code, out = await asyncio.to_thread(run, "alerts", "add", "--tenant", "acme-corp", *hook)
    assert code == 0 and len(json.loads(out)["secret"]) >= 32 and json.loads(out)["events"] == ["job_failed"]
    code, out = await asyncio.to_thread(run, "alerts", "list", "--tenant", "acme-corp")
    assert code == 0 and json.loads(out)[0]["secret"] == ""
    code, out = await asyncio.to_thread(run, "schedules", "create", "--config", str(body), "--schedule", "0 2 * *")
    assert code == 1  # a clear error, not a traceback
    code, out = await asyncio.to_thread(run, "schedules", "delete", sid)
    assert code == 0


async def test_cli_follows_jobs_with_exit_codes_json_and_a_plot(app, tmp_path, capsys):
    """`jobs create --follow` and `jobs watch`: bars per step, the log, the final metrics;
    exit codes 0 / 3 / 4 for completed / failed / cancelled; --output json for scripts;
    `jobs plot` writes the validation window as a PNG."""
    target = f"127.0.0.1:{app.port}"

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = aihub(["--target", target, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def body(name: str, config: dict) -> str:
        path = tmp_path / name
        path.write_text(json.dumps({"tenant_id": "acme-corp", "model_type": "forecast", "config": config}))
        return str(path)

    code, out, _ = await asyncio.to_thread(run, "jobs", "create", "--config", body("ok.json", tiny_config()), "--follow")
    assert code == 0, out
    job_id = out.split("created job ", 1)[1].split()[0]
    lines = out.splitlines()
    assert any(line.startswith("COMPLETED 100%") for line in lines)  # each change, as a plain line (piped)
    assert any("job completed (model version 1)" in line for line in lines)  # the log under it
    for step in ("data_loading", "preprocessing", "training", "evaluation", "registration"):
        assert any(line.startswith(step) and line.rstrip().endswith("100%") and "━" in line for line in lines), step
    async with AsyncTrainingClient(target) as client:
        done = await client.get_job(job_id)
        assert any(line.split() == ["mae", "│", f"{done.metrics['mae']:.4g}"] for line in lines), out  # the final metrics table

        code, out, _ = await asyncio.to_thread(run, "jobs", "watch", job_id, "--output", "json")
        snapshots = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and snapshots[-1]["status"] == "COMPLETED" and snapshots[-1]["job_id"] == job_id
        code, out, _ = await asyncio.to_thread(run, "--output", "json", "jobs", "list", "--tenant", "acme-corp")
        assert code == 0 and [j["job_id"] for j in json.loads(out)] == [job_id]
        code, out, _ = await asyncio.to_thread(run, "jobs", "list", "--tenant", "acme-corp")
        row = next(line for line in out.splitlines() if job_id in line)  # the whole id, in a table row
        assert "COMPLETED" in row and "100%" in row and "│" in row

        png = tmp_path / "forecast.png"
        code, out, _ = await asyncio.to_thread(run, "jobs", "plot", job_id, str(png), "--output", "json")
        made = json.loads(out)
        assert code == 0 and made["points"] == done.metrics["validation_rows"] and made["path"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

        code, out, _ = await asyncio.to_thread(
            run, "jobs", "create", "--config", body("bad.json", tiny_config(feature_table="nope")), "--follow"
        )
        assert code == 3 and "FAILED" in out and "DataLoadError" in out
        failed_id = out.split("created job ", 1)[1].split()[0]
        code, _, err = await asyncio.to_thread(run, "jobs", "plot", failed_id)
        assert code == 1 and "COMPLETED" in err  # its predictions exist once it has completed: said, not a traceback
        code, _, err = await asyncio.to_thread(run, "--output", "json", "jobs", "get", "00000000-0000-0000-0000-000000000000")
        assert code == 1 and json.loads(err)["error"] == "JobNotFound"

        slow = await client.create_job("acme-corp", "forecast", slow_config())
        watching = asyncio.create_task(asyncio.to_thread(run, "jobs", "watch", slow.job_id))
        async for job in client.watch_job(slow.job_id):
            if job.status == pb.RUNNING:
                break
        await client.cancel_job(slow.job_id)
        code, out, _ = await asyncio.wait_for(watching, 60)
        assert code == 4 and "CANCELLED" in out
