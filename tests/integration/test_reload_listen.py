"""The registry listener against a real PostgreSQL: notifications become triggers, and a killed
connection comes back, says so, and hears the next notification."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from resolverd.daemon.reload import LISTEN_APPLICATION_NAME, listen_postgres

pytestmark = pytest.mark.integration

# Quoted by the listener: upper case and a blank would break an unquoted LISTEN.
CHANNEL = "Resolverd Reload Test"
TIMEOUT_S = 8.0


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once `condition()` holds (the test's wait_for fails a test that waits forever)."""
    while not condition():
        await asyncio.sleep(0.01)


def test_notifications_trigger_and_a_terminated_listener_reconnects(pg_database: str) -> None:
    import psycopg
    from psycopg import sql

    from resolverd.db import redact_dsn

    notify = sql.SQL("NOTIFY {}, {}")
    reasons: list[str] = []
    states: list[str] = []

    async def scenario() -> None:
        listener = asyncio.create_task(
            listen_postgres(
                pg_database,
                CHANNEL,
                reasons.append,
                backoff_start=0.05,
                backoff_max=0.2,
                on_state=states.append,
            )
        )
        try:
            async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as admin:
                await eventually(lambda: any(s.startswith("listening on") for s in states))
                await admin.execute(notify.format(sql.Identifier(CHANNEL), sql.Literal("x")))
                await eventually(lambda: bool(reasons))
                assert reasons == [f"NOTIFY {CHANNEL}: x"]  # the first connect is no trigger

                cur = await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (LISTEN_APPLICATION_NAME,),
                )
                assert await cur.fetchall() == [(True,)]
                await eventually(lambda: any(r.startswith("listening again on") for r in reasons))
                assert any(s.startswith("disconnected: ") for s in states)
                assert reasons[-1] == f"listening again on {CHANNEL} at {redact_dsn(pg_database)}"

                await admin.execute(notify.format(sql.Identifier(CHANNEL), sql.Literal("y")))
                await eventually(lambda: reasons[-1] == f"NOTIFY {CHANNEL}: y")
        finally:
            listener.cancel()
            await asyncio.wait([listener])
        assert listener.cancelled()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT_S))
