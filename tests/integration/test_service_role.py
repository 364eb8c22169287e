"""A least-privilege deployment: with AIHUB_SERVICE_DATABASE_URL the requests and the jobs'
Ray tasks connect as a LOGIN role of their own (granted aihub_service, owning nothing), and
only the migrations and the dispatcher use DATABASE_URL (the owner). A job runs to the end
that way, and a statement on that role's connection cannot RESET ROLE to the owner: it can
read no table and drop nothing."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from client import AsyncTrainingClient, pb
from storage import db
from tests.conftest import load_demo, tiny_config

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_requests_and_jobs_run_as_a_login_role_that_owns_nothing(start_app, database_url, demo_frame):
    role = f"aihub_app_{os.getpid()}"
    owner = await asyncpg.connect(db.asyncpg_dsn(database_url))
    try:
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.execute(f"CREATE ROLE {role} LOGIN NOINHERIT")  # its privileges only after SET ROLE
        await owner.execute(f"GRANT aihub_service TO {role}")
    finally:
        await owner.close()
    service_url = make_url(database_url).set(username=role, password=None).render_as_string(hide_password=False)
    await load_demo(database_url, demo_frame)
    app = await start_app(service_database_url=service_url)
    assert app.service_database_url == service_url
    async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as client:
        job = await client.create_job("acme-corp", "forecast", tiny_config())
        done = await asyncio.wait_for(client.wait(job.job_id), 120)
        assert done.status == pb.COMPLETED, done.error
        assert (await client.list_models("acme-corp"))[0].job_id == job.job_id
    served = await asyncpg.connect(db.asyncpg_dsn(service_url))
    try:
        assert await served.fetchval("SELECT current_user") == role
        sessions = await served.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role)
        assert sessions >= 2  # the app's pool (and the job's task) connected as the role
        await served.execute("RESET ROLE")
        for statement in ("SELECT count(*) FROM training_jobs", "DROP TABLE training_jobs", "SELECT count(*) FROM api_keys"):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await served.execute(statement)
    finally:
        await served.close()
