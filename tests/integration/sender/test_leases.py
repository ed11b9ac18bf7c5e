"""The sender's lease renewal never waits on a row another transaction holds: waiting on rows
locked in another order made PostgreSQL abort it as a deadlock, the lease then ran out under a
live provider call, and a sweeper sent that message a second time (issue 14's fault suite)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from services.sender.models import messages
from services.sender.reconcile import _take_over
from services.sender.repository.claim import renew_leases
from shared.db import create_engine
from tests.conftest import Infra

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(infra: Infra):
    engine = create_engine(infra.database_url, pool_size=4)
    yield engine
    await engine.dispose()


def row(started: datetime) -> dict:
    return {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "request_hash": "h",
        "recipient_enc": "enc",
        "recipient_hash": uuid.uuid4().hex,
        "text": "hi",
        "priority": 5,
        "origin": "api",
        "status": "sending",
        "sending_started_at": started,
        "created_at": started,
        "updated_at": started,
    }


async def test_renewal_skips_a_row_held_by_another_transaction_and_renews_the_rest(engine):
    old = datetime.now(UTC) - timedelta(minutes=5)
    held, free = row(old), row(old)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(messages), [held, free])
    now = datetime.now(UTC)
    async with engine.connect() as other:
        tx = await other.begin()
        # another process records this message's result: its row is locked until it commits
        await other.execute(sa.select(messages.c.id).where(messages.c.id == held["id"]).with_for_update())
        async with engine.begin() as conn:
            await asyncio.wait_for(renew_leases(conn, [held["id"], free["id"]], now), timeout=5)
        await tx.rollback()
    async with engine.connect() as conn:
        got = dict(
            (
                await conn.execute(
                    sa.select(messages.c.id, messages.c.sending_started_at).where(
                        messages.c.id.in_([held["id"], free["id"]])
                    )
                )
            ).all()
        )
    assert got[free["id"]] == now  # renewed without waiting for the held row
    assert got[held["id"]] == old  # left for the next round
    # and the next round, once the row is free, renews it
    later = datetime.now(UTC)
    async with engine.begin() as conn:
        await renew_leases(conn, [held["id"]], later)
    async with engine.connect() as conn:
        value = (
            await conn.execute(sa.select(messages.c.sending_started_at).where(messages.c.id == held["id"]))
        ).scalar_one()
    assert value == later


async def test_the_sweeper_never_takes_over_a_message_its_own_process_still_has_in_a_call(engine):
    """Under load a renewal round can come late (the event loop, a pool connection): a message
    this process still has at the provider is then past its lease, but is no orphan. The sweeper
    renews it instead of queueing it again (which sent it twice in a 10,000-recipient campaign)."""
    ancient = datetime(2001, 1, 1, tzinfo=UTC)
    mine, orphan = row(ancient), row(ancient + timedelta(seconds=1))
    async with engine.begin() as conn:
        await conn.execute(sa.insert(messages), [mine, orphan])
    sender = SimpleNamespace(runtime=SimpleNamespace(engine=engine), lease=timedelta(seconds=30))
    now = datetime.now(UTC)
    taken = await _take_over(sender, now, live={mine["id"]})
    ids = {r.id for r, _ in taken}
    assert orphan["id"] in ids and mine["id"] not in ids
    async with engine.connect() as conn:
        got = dict(
            (
                await conn.execute(
                    sa.select(messages.c.id, messages.c.sending_started_at).where(
                        messages.c.id.in_([mine["id"], orphan["id"]])
                    )
                )
            ).all()
        )
    assert got[mine["id"]] == now  # renewed: its call goes on under a fresh lease
    assert got[orphan["id"]] == now  # taken over by this sweep
