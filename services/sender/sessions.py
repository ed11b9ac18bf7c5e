"""Gateway sessions: a WAHA or Evolution API channel sends only while its WhatsApp Web session
is connected, and someone must scan a QR code to connect it.

The session's state comes from three places — the gateway's webhooks (``channel.session_changed``
from ingest), a periodic poll of the gateway's state API (catches missed webhooks), and a send the
gateway refused because the session is down (``SessionDown``). Each is recorded by
``record_state``, which pauses the channel while the session is not connected and resumes it
when it is back. Messages meanwhile stay ``queued`` (a refused one goes back to the queue without
using up an attempt), so they go out once the session is connected.

The channel has one pause (``channels.paused``/``pause_reason``), shared with operators and
provider errors. The session remembers the exact reason it wrote (``channel_sessions.pause_reason``)
and lifts only that pause: an operator's or an error's pause written over it stays when the
session comes back, and an operator's resume while the session is down keeps the channel paused
by the session (``keep_session_pause``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from services.sender import repository as repo
from services.sender import status
from services.sender.claim import Job
from services.sender.context import Sender
from services.sender.providers.base import ProviderError
from services.sender.providers.gateway import SessionDown
from services.sender.repository import sessions as session_repo
from shared.db import UnitOfWork
from shared.events import ChannelSessionChanged, CloudEvent, utcnow
from shared.logging import get_logger

log = get_logger(__name__)

CONNECTED = "connected"
STATES = ("connected", "connecting", "qr", "disconnected")


def is_gateway(provider: str) -> bool:
    return provider in session_repo.GATEWAY_PROVIDERS


def pause_text(channel_id: uuid.UUID, state: str, detail: str | None) -> str:
    """What the channel's ``pause_reason`` says while its session holds it paused."""
    what = {
        "qr": "is waiting for its QR code to be scanned",
        "connecting": "is reconnecting",
        "disconnected": "is disconnected",
    }.get(state, f"is {state}")
    gateway_word = f" ({detail})" if detail else ""
    return (
        f"the WhatsApp session {what}{gateway_word}: messages wait and go out when it is connected "
        f"again; scan the QR code from GET /v1/channels/{channel_id}/session"
    )


@dataclass(frozen=True)
class Decision:
    """What a new session state does to the channel's pause."""

    pause: str | None = None  # pause the channel with this reason
    resume: bool = False  # lift the session's own pause
    hold: str | None = None  # the session's pause reason afterwards


def decide(
    state: str, *, channel_paused: bool, channel_reason: str | None, held: str | None, new_reason: str
) -> Decision:
    """Pure: the session is ``state``; the channel is paused (or not) with ``channel_reason``;
    the session held a pause with reason ``held`` (None: it holds none)."""
    ours = held is not None and channel_paused and channel_reason == held
    if state == CONNECTED:
        return Decision(resume=ours)
    if ours:  # still down: keep our pause, with the newest wording
        return Decision(pause=new_reason if new_reason != held else None, hold=new_reason)
    if channel_paused:  # an operator's or an error's pause: leave it (and hold none)
        return Decision()
    return Decision(pause=new_reason, hold=new_reason)


async def record_state(
    conn: Any, channel_id: uuid.UUID, state: str, detail: str | None, at: datetime, *, source: str
) -> str | None:
    """Record the session's ``state`` observed at ``at`` and pause or resume the channel; an
    observation older than the one recorded changes nothing. Returns the state in force."""
    channel = await session_repo.lock_channel(conn, channel_id)
    if channel is None or not is_gateway(channel.provider):
        return None
    current = await session_repo.lock_session(conn, channel_id)
    if current is not None and at < current.at:
        return str(current.state)
    held = current.pause_reason if current is not None else None
    d = decide(
        state,
        channel_paused=channel.paused,
        channel_reason=channel.pause_reason,
        held=held,
        new_reason=pause_text(channel_id, state, detail),
    )
    now = utcnow()
    if d.pause is not None:
        await session_repo.set_channel_pause(conn, channel_id, True, d.pause, now)
        log.warning("channel paused: session down", channel_id=str(channel_id), state=state, source=source)
    if d.resume:
        await session_repo.set_channel_pause(conn, channel_id, False, None, now)
        await repo.notify_due(conn)  # its waiting messages are due now
        log.info("channel resumed: session connected", channel_id=str(channel_id), source=source)
    changed = current is None or current.state != state
    await session_repo.save_session(
        conn,
        {
            "channel_id": channel_id,
            "tenant_id": channel.tenant_id,
            "state": state,
            "detail": detail,
            "since": at if changed else current.since,  # type: ignore[union-attr]
            "at": at,
            "pause_reason": d.hold,
        },
    )
    return state


# --- the three sources ------------------------------------------------------------------------


async def on_session_changed(sender: Sender, event: CloudEvent[ChannelSessionChanged]) -> None:
    """A gateway's webhook, through ingest. A source without a channel is matched by its
    session (WAHA) / instance (Evolution) name among the tenant's channels."""
    d = event.data

    async def write() -> None:
        async with sender.runtime.engine.begin() as conn:
            channel_id = d.channel_id
            if channel_id is None:
                channel_id = await session_repo.find_gateway_channel(
                    conn, event.tenantid, d.provider, d.session
                )
            elif await repo.get_channel(conn, event.tenantid, channel_id) is None:
                channel_id = None
            if channel_id is None:
                log.info("session change of no known channel", provider=d.provider, session=d.session)
                return
            await record_state(conn, channel_id, d.state, d.detail, d.at, source="webhook")

    await sender.runtime.with_db("session state", write)


async def requeue_refused(
    sender: Sender, uow: UnitOfWork, job: Job, current: Row[Any], exc: SessionDown
) -> None:
    """A send the gateway refused because the session is down: the message goes back to the
    queue (the attempt does not count) and the channel pauses until the session is connected."""
    now = utcnow()
    await status.record(
        uow,
        [
            status.Change(
                current._mapping,
                "queued",
                "sending",
                f"{job.provider}: {exc.reason}; waiting for the session",
                error_code=exc.code,
                values={
                    "sending_started_at": None,
                    "attempts": max(0, current.attempts - 1),
                    "not_before": now,
                },
            )
        ],
    )
    await record_state(uow.conn, job.channel.id, exc.state, exc.code, now, source="send")


async def keep_session_pause(conn: Any, channel_id: uuid.UUID, values: dict[str, Any]) -> None:
    """An operator resumes the channel (``values`` about to be written): while its session is
    known to be down it stays paused, by the session, which resumes it once connected."""
    session = await session_repo.get_session(conn, channel_id)
    if session is None or session.state == CONNECTED:
        return
    reason = pause_text(channel_id, session.state, session.detail)
    values.update(paused=True, pause_reason=reason)
    await session_repo.save_session(conn, {**session._mapping, "pause_reason": reason})


async def poll_once(sender: Sender) -> int:
    """Ask every gateway channel's gateway for its session state; returns how many answered."""
    async with sender.runtime.engine.connect() as conn:
        rows = await session_repo.gateway_channels(conn)
    answered = 0
    for row in rows:
        try:
            state, detail = await fetch_state(sender, row)
        except Exception as exc:  # unreachable gateway, unreadable credentials: the next channel
            log.info("session poll: no answer", channel_id=str(row.id), error=repr(exc)[:200])
            continue
        answered += 1
        async with sender.runtime.engine.begin() as conn:
            await record_state(conn, row.id, state, detail, utcnow(), source="poll")
    return answered


async def poll_forever(sender: Sender) -> None:
    interval = sender.settings.session_poll_seconds
    if interval <= 0:
        return
    while not sender.runtime.stopping.is_set():
        await asyncio.sleep(interval)
        try:
            await poll_once(sender)
        except Exception as exc:  # the database is away: the next round tries again
            log.warning("session poll failed", error=repr(exc)[:200])


# --- the console's view -----------------------------------------------------------------------


async def fetch_state(sender: Sender, row: Any) -> tuple[str, str]:
    config = sender.channel_config(row)
    return await sender.provider(row.provider).session_state(config)


async def current_session(
    sender: Sender, tenant_id: uuid.UUID, channel_id: uuid.UUID
) -> dict[str, Any] | None:
    """``{state, since, qr}`` of a channel (None: no such channel). A gateway channel's state is
    asked from the gateway (and recorded); the QR code is fetched while the session waits for
    one. A gateway that does not answer leaves the last recorded state."""
    async with sender.runtime.engine.connect() as conn:
        row = await repo.get_channel(conn, tenant_id, channel_id)
    if row is None:
        return None
    if not is_gateway(row.provider):
        return {"state": CONNECTED, "since": row.created_at, "qr": None}
    try:
        state, detail = await fetch_state(sender, row)
    except (ProviderError, ValueError) as exc:
        log.info("session state: gateway did not answer", channel_id=str(channel_id), error=str(exc)[:200])
    else:
        async with sender.runtime.engine.begin() as conn:
            await record_state(conn, channel_id, state, detail, utcnow(), source="api")
    async with sender.runtime.engine.connect() as conn:
        session = await session_repo.get_session(conn, channel_id)
    if session is None:
        return {"state": "unknown", "since": None, "qr": None}
    qr = None
    if session.state != CONNECTED:
        try:
            image = await sender.provider(row.provider).session_qr(sender.channel_config(row))
        except ProviderError:
            image = None
        qr = {"image": image} if image else None
    return {"state": session.state, "since": session.since, "qr": qr}


def brief(row: Any) -> dict[str, Any] | None:
    """The channel view's ``session``, from a channel row read with its session (no gateway
    call and no QR code: ``GET /v1/channels/{id}/session`` has them); None for other providers."""
    if not is_gateway(row.provider):
        return None
    state = getattr(row, "session_state", None)
    return {"state": state or "unknown", "since": getattr(row, "session_since", None), "qr": None}
