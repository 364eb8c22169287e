"""Loads the demo data for the guide's quick start, once."""

from __future__ import annotations

import asyncio
import logging

from server import demo_data
from storage import db, features

log = logging.getLogger(__name__)


async def seed_demo(engine: db.Engine) -> int:
    """Import the demo frame for acme-corp unless its rows are already there."""
    async with db.transaction(engine) as conn:
        have = await features.count_rows(conn, demo_data.TENANT, demo_data.TABLE)
    if have:
        log.info("demo data already loaded (%d rows for %s)", have, demo_data.TENANT)
        return 0
    frame = await asyncio.to_thread(demo_data.generate)
    async with db.transaction(engine) as conn:
        rows, _ = await features.import_frame(conn, demo_data.TENANT, demo_data.TABLE, frame)
    log.info("loaded %d demo rows into features.%s for %s", rows, demo_data.TABLE, demo_data.TENANT)
    return rows
