"""Reconciliation of orphaned ``sending`` rows: messages whose sender died mid-call.

Rule: ask the provider whether it has the message (``lookup``). If it does, the message is
``sent``; if it does not, or cannot tell (Meta keeps no client reference), the message is queued
again and resent — a possible duplicate is preferred to a silent loss. Every case is counted in
``herald_sender_reconciled_total``.

The provider lookups are made outside any transaction and hold no row lock: the sweep first
takes the orphans over (their lease restarts under this process, so no other sweeper or sender
touches them), commits, asks the providers, then records what it found for those still under its
lease.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from services.sender import repository as repo
from services.sender import status
from services.sender.context import CONTENT, Sender
from services.sender.metrics import LEASE_LATE, RECONCILED
from services.sender.providers.base import LookupUnsupported, Outbound
from shared.events import utcnow
from shared.logging import get_logger

log = get_logger(__name__)


async def _take_over(
    sender: Sender, now: datetime, live: Collection[uuid.UUID] = ()
) -> list[tuple[Row[Any], Row[Any] | None]]:
    """The orphans (lease expired) with their channels; their lease now runs from ``now``.
    A message of ``live`` (claimed by this very process and not yet recorded) is no orphan,
    however late its lease: its lease is renewed and it is left to its call."""
    async with sender.runtime.engine.begin() as conn:
        rows = await repo.orphaned_sending(conn, now - sender.lease, 100)
        alive = [r.id for r in rows if r.id in live]
        if alive:
            await repo.renew_leases(conn, alive, now)
            LEASE_LATE.inc(len(alive))
            log.warning("lease ran out under a live call: renewed, not reconciled", count=len(alive))
            rows = [r for r in rows if r.id not in live]
        if not rows:
            return []
        await repo.renew_leases(conn, [r.id for r in rows], now)
        channels = {
            cid: await repo.get_channel_any(conn, cid) for cid in {r.channel_id for r in rows if r.channel_id}
        }
    return [(r, channels.get(r.channel_id) if r.channel_id else None) for r in rows]


async def _lookup(sender: Sender, row: Row[Any], ch: Row[Any] | None) -> tuple[str | None, str]:
    """(the provider's message id if it has the message, the outcome label)."""
    if ch is None:
        return None, "resent"
    try:
        content = CONTENT.validate_python(row.content or {"kind": "text", "body": row.text})
        outbound = Outbound(row.id, row.tenant_id, sender.runtime.secrets.decrypt(row.recipient_enc), content)
        found = await sender.provider(ch.provider).lookup(sender.channel_config(ch), outbound)
    except LookupUnsupported:
        return None, "resent_unverifiable"
    except Exception as exc:
        log.warning("reconcile lookup failed", error=repr(exc)[:200])
        return None, "resent_unverifiable"
    return found, "already_sent" if found is not None else "resent"


async def reconcile_orphans(sender: Sender, live: Collection[uuid.UUID] = ()) -> int:
    """One sweep; returns how many orphans it reconciled (``live``: this process's own claims)."""
    taken_at = utcnow()
    orphans = await _take_over(sender, taken_at, live)
    if not orphans:
        return 0
    found: dict[uuid.UUID, tuple[str | None, str]] = {}
    for row, ch in orphans:  # no transaction is open here
        found[row.id] = await _lookup(sender, row, ch)
    count = 0
    async with sender.runtime.uow() as uow:
        current = await repo.still_sending(uow.conn, list(found))
        changes = []
        for row in current:
            if row.sending_started_at != taken_at:
                continue  # someone renewed it meanwhile: a live sender owns it
            pmid, outcome = found[row.id]
            count += 1
            if pmid is not None:
                changes.append(
                    status.Change(
                        row._mapping,
                        "sent",
                        "sending",
                        "reconciled after a crash: the provider had it",
                        provider_message_id=pmid,
                        values={"sending_started_at": None},
                    )
                )
            else:
                changes.append(
                    status.Change(
                        row._mapping,
                        "queued",
                        "sending",
                        f"reconciled after a crash: sending again ({outcome})",
                        error_code=row.error_code,
                        values={"sending_started_at": None, "not_before": utcnow()},
                    )
                )
            RECONCILED.labels(outcome).inc()
            log.warning(
                "reconciled orphaned message", message_id=str(row.id), outcome="sent" if pmid else outcome
            )
        await status.record(uow, changes)
        if changes:
            await repo.notify_due(uow.conn)
        await uow.commit()
    return count


async def sweep_orphans_forever(sender: Sender, live: Collection[uuid.UUID] = ()) -> None:
    interval = max(0.5, sender.lease.total_seconds() / 2)
    while not sender.runtime.stopping.is_set():
        try:
            await reconcile_orphans(sender, live)
        except Exception as exc:
            log.warning("orphan sweep failed", error=repr(exc)[:200])
        await asyncio.sleep(interval)
