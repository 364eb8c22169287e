"""Loads the demo data for the guide's quick start, once."""

from __future__ import annotations

import asyncio
import logging

from server import demo_data
from storage import db, features, tenants
from storage.records import Priority
from storage.tenancy import Scope

log = logging.getLogger(__name__)


async def seed_demo(engine: db.Engine) -> int:
    """Import the demo frame for acme-corp unless its rows are already there, and grant
    the demo tenant the critical priority the guide's quick start uses."""
    scope = Scope.of(demo_data.TENANT)
    async with db.transaction(engine, scope) as conn:
        await tenants.update(conn, demo_data.TENANT, {"max_priority": Priority.CRITICAL})
        have = await features.count_rows(conn, demo_data.TABLE)
    if have:
        log.info("demo data already loaded (%d rows for %s)", have, demo_data.TENANT)
        return 0
    frame = await asyncio.to_thread(demo_data.generate)
    async with db.transaction(engine, scope) as conn:
        rows, _ = await features.import_frame(conn, demo_data.TABLE, frame)
    log.info("loaded %d demo rows into features.%s for %s", rows, demo_data.TABLE, demo_data.TENANT)
    return rows
