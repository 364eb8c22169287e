"""`alembic upgrade head` on an empty database, and the aihub CLI against a server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import pytest

from client.cli import main as aihub
from storage import db
from tests.conftest import ROOT, empty_database, tiny_config

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
    assert code == 0 and out.strip().splitlines()[-1].startswith("COMPLETED 100%")
    code, out = await asyncio.to_thread(run, "jobs", "logs", job_id)
    assert code == 0 and "registration" in out and "job completed" in out
    code, out = await asyncio.to_thread(run, "jobs", "list", "--tenant", "hooli")
    assert code == 0 and job_id in out
    code, out = await asyncio.to_thread(run, "jobs", "retry", job_id)
    assert code == 1  # COMPLETED jobs are not retried
    code, out = await asyncio.to_thread(run, "jobs", "metrics", job_id)
    assert code == 0 and json.loads(out)["mae"] > 0
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
