"""Isolation in depth, in the real PostgreSQL: the repositories need a tenant scope, row-level
security stops a service session that names the wrong tenant (the second wall), feature
tables are per tenant and changed only by their tenant, quotas are enforced, and the claim
is fair across tenants within a priority."""

from __future__ import annotations

import asyncpg
import pandas as pd
import pytest
import pytest_asyncio

from server import demo_data
from storage import db, features, jobs, tenants
from storage.errors import InvalidFeatureData, MissingTenantScope, QuotaExceeded
from storage.records import JobStatus, NewJob, Priority
from storage.tenancy import DISPATCHER_ROLE, SERVICE_ROLE, Scope, feature_schema
from tests.conftest import claim_one, load_demo

pytestmark = pytest.mark.asyncio(loop_scope="session")


def new_job(tenant: str, priority: Priority = Priority.NORMAL) -> NewJob:
    return NewJob(tenant, "forecast", "lgbm", priority, {}, {})


@pytest_asyncio.fixture(loop_scope="session")
async def engine(database_url):
    engine = db.create_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


async def test_tenant_repositories_refuse_a_transaction_without_a_tenant(engine):
    async with db.transaction(engine) as conn:
        with pytest.raises(MissingTenantScope):
            await jobs.list_jobs(conn)
    async with db.transaction(engine, Scope.ALL) as conn:
        with pytest.raises(MissingTenantScope):  # a job is one tenant's; "every tenant" cannot create one
            await jobs.create(conn, new_job("acme-corp"))


async def test_row_level_security_hides_other_tenants_rows_from_a_direct_read(engine, database_url, demo_frame):
    await load_demo(database_url, demo_frame, "acme-corp")
    async with db.transaction(engine, Scope.of("acme-corp")) as conn:
        a, _ = await jobs.create(conn, new_job("acme-corp"))
    async with db.transaction(engine, Scope.of("globex")) as conn:
        await jobs.create(conn, new_job("globex"))
    schema = feature_schema("acme-corp")
    raw = await asyncpg.connect(db.asyncpg_dsn(database_url))
    try:
        # The service role, with the wrong tenant set, reads every table without a filter.
        await raw.execute(f"SET ROLE {SERVICE_ROLE}")
        await raw.execute("SELECT set_config('aihub.tenant_id', 'globex', false)")
        assert {r["tenant_id"] for r in await raw.fetch("SELECT tenant_id FROM training_jobs")} == {"globex"}
        assert await raw.fetchval("SELECT count(*) FROM job_logs WHERE job_id = $1", a.job_id) == 0
        assert await raw.fetchval(f'SELECT count(*) FROM "{schema}"."load_forecasting"') == 0  # noqa: S608 - a test's own name
        # ... and cannot write another tenant's rows.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute(
                "INSERT INTO training_jobs (id, tenant_id, model_type, algorithm, status, priority, config, metadata, "
                "created_at, updated_at) "
                "VALUES (gen_random_uuid(), 'acme-corp', 'forecast', 'lgbm', 'PENDING', 2, '{}', '{}', now(), now())"
            )
        assert await raw.execute("UPDATE training_jobs SET priority = 0 WHERE id = $1", a.job_id) == "UPDATE 0"
        # ... nor change another tenant's feature table (the DDL function checks the tenant).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute("SELECT aihub_prepare_feature_table('acme-corp', 'load_forecasting', ARRAY['junk'], 200)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.execute(f'ALTER TABLE "{schema}"."load_forecasting" ADD COLUMN junk float8')
        # With no tenant set at all, nothing is visible.
        await raw.execute("RESET aihub.tenant_id")
        assert await raw.fetchval("SELECT count(*) FROM training_jobs") == 0
        # The right tenant sees its own rows.
        await raw.execute("SELECT set_config('aihub.tenant_id', 'acme-corp', false)")
        assert await raw.fetchval(f'SELECT count(*) FROM "{schema}"."load_forecasting"') == len(demo_frame)  # noqa: S608
        # The dispatcher's role sees every job (the claim), and no feature data.
        await raw.execute(f"SET ROLE {DISPATCHER_ROLE}")
        assert await raw.fetchval("SELECT count(DISTINCT tenant_id) FROM training_jobs") == 2
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw.fetchval(f'SELECT count(*) FROM "{schema}"."load_forecasting"')  # noqa: S608
    finally:
        await raw.close()


async def test_feature_tables_are_per_tenant_and_capped(engine, demo_frame):
    small = demo_frame.head(48)
    async with db.transaction(engine, Scope.of("acme-corp")) as conn:
        await features.import_frame(conn, "load_forecasting", small)
    # Another tenant adds columns to "its" load_forecasting: acme-corp's table does not change.
    wide = pd.concat(
        [small[["timestamp", "load"]], pd.DataFrame(0.0, index=small.index, columns=[f"junk_{i}" for i in range(150)])], axis=1
    )
    async with db.transaction(engine, Scope.of("globex")) as conn:
        await features.import_frame(conn, "load_forecasting", wide)
    async with db.transaction(engine, Scope.of("acme-corp")) as conn:
        columns = await features.columns_of(conn, "load_forecasting")
        assert not any(c.startswith("junk") for c in columns)
        assert await features.count_rows(conn, "load_forecasting") == 48
    # More columns than the cap: a clear error naming the cap, nothing changed.
    more = [f"more_{i}" for i in range(features.MAX_VALUE_COLUMNS)]
    wider = pd.concat([small[["timestamp"]], pd.DataFrame(0.0, index=small.index, columns=more)], axis=1)
    with pytest.raises(InvalidFeatureData, match=f"at most {features.MAX_VALUE_COLUMNS}"):
        async with db.transaction(engine, Scope.of("globex")) as conn:
            await features.import_frame(conn, "load_forecasting", wider)
    # Feature data is always one tenant's: "every tenant" cannot read or write it.
    with pytest.raises(MissingTenantScope):
        async with db.transaction(engine, Scope.ALL) as conn:
            await features.import_frame(conn, "load_forecasting", small)


async def test_quotas_limit_queued_jobs_and_priority(engine):
    async with db.transaction(engine, Scope.of("initech")) as conn:
        await tenants.update(conn, "initech", {"max_queued_jobs": 2})
    async with db.transaction(engine, Scope.of("initech")) as conn:
        for _ in range(2):
            await jobs.create(conn, new_job("initech"))
    with pytest.raises(QuotaExceeded) as full:
        async with db.transaction(engine, Scope.of("initech")) as conn:
            await jobs.create(conn, new_job("initech"))
    assert full.value.limit == "max_queued_jobs" and full.value.allowed == 2
    # critical must be granted: high is the default ceiling.
    with pytest.raises(QuotaExceeded) as high:
        async with db.transaction(engine, Scope.of("hooli")) as conn:
            await jobs.create(conn, new_job("hooli", Priority.CRITICAL))
    assert high.value.limit == "max_priority" and high.value.allowed == "high"
    async with db.transaction(engine, Scope.of("hooli")) as conn:
        job, _ = await jobs.create(conn, new_job("hooli", Priority.HIGH))
        with pytest.raises(QuotaExceeded):
            await jobs.update_priority(conn, job.job_id, Priority.CRITICAL)
    async with db.transaction(engine, Scope.of("hooli")) as conn:
        await tenants.update(conn, "hooli", {"max_priority": Priority.CRITICAL})
        assert (await jobs.update_priority(conn, job.job_id, Priority.CRITICAL)).priority == Priority.CRITICAL


async def test_the_claim_is_fair_across_tenants_within_a_priority(database_url):
    service = db.create_engine(database_url, pool_size=2)
    dispatcher = db.create_engine(database_url, role=DISPATCHER_ROLE, pool_size=2)
    try:
        # One tenant queues a burst of 6 jobs first; another queues 2 after it.
        async with db.transaction(service, Scope.of("burst")) as conn:
            for _ in range(6):
                await jobs.create(conn, new_job("burst"))
        async with db.transaction(service, Scope.of("quiet")) as conn:
            for _ in range(2):
                await jobs.create(conn, new_job("quiet"))
        # A higher priority still goes first, whoever runs what.
        async with db.transaction(service, Scope.of("burst")) as conn:
            await jobs.create(conn, new_job("burst", Priority.HIGH))

        async def claim() -> str | None:
            async with db.transaction(dispatcher) as conn:
                job = await claim_one(conn, "s1")
            return None if job is None else f"{job.tenant_id}:{job.priority.value}"

        order = [await claim() for _ in range(4)]
        # Oldest-first alone would give burst x4; fairness alternates once burst runs more.
        assert order == ["burst:high", "quiet:normal", "burst:normal", "quiet:normal"], order
        # A tenant at its max_running_jobs waits; others go on.
        async with db.transaction(service, Scope.of("burst")) as conn:
            await tenants.update(conn, "burst", {"max_running_jobs": 2})
        async with db.transaction(service, Scope.of("quiet")) as conn:
            await jobs.create(conn, new_job("quiet"))
        assert await claim() == "quiet:normal"
        assert await claim() is None  # burst has 2 running and 5 waiting: none of its jobs starts
        async with db.transaction(service, Scope.of("burst")) as conn:
            counts = await jobs.count_by_status(conn)
        assert counts[JobStatus.PENDING.value] == 5 and counts[JobStatus.RUNNING.value] == 2
    finally:
        await service.dispose()
        await dispatcher.dispose()


async def test_a_value_postgresql_refuses_is_invalid_data_not_a_database_error(engine):
    from storage.errors import InvalidData

    with pytest.raises(InvalidData) as err:
        async with db.transaction(engine, Scope.of("acme-corp")) as conn:
            await jobs.create(conn, NewJob("acme-corp", "forecast", "lgbm", Priority.NORMAL, {}, {"k": "a\x00b"}))
    assert err.value.sqlstate.startswith("22") and "\x00" not in str(err.value)
    assert "unsupported" not in str(err.value)  # PostgreSQL's own message stays in the server log


async def test_demo_seed_grants_the_demo_tenant_critical(engine):
    from server.seed import seed_demo

    await seed_demo(engine)
    async with db.transaction(engine, Scope.of(demo_data.TENANT)) as conn:
        quota = await tenants.get(conn, demo_data.TENANT)
        assert quota.max_priority == Priority.CRITICAL
        assert await features.count_rows(conn, demo_data.TABLE) > 8000
    assert isinstance(demo_data.generate("2024-01-01", "2024-01-02"), pd.DataFrame)
