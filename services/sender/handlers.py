"""Sender use cases: accept a request, deliver it once within every limit, record what happened.

How a message travels (see README.md for the reasoning):

1. ``store_request`` (HTTP ``POST /v1/messages`` or the ``message.requested`` consumer) writes the
   message ``queued`` with its channel and ``not_before = now``, its history and a
   ``message.status`` outbox row in one transaction, and NOTIFYs ``sender_due``.
2. ``Dispatcher.claim`` (every sender process runs one) locks the channels that have due messages
   (``FOR UPDATE SKIP LOCKED``), takes each channel's due messages by priority, applies the checks
   (opt-out, 24-hour window, quiet hours) and limits (pair interval, tier), reserves send slots
   1/throughput apart on the channel row (``next_slot``), and marks the allowed ones ``sending`` —
   all in one transaction, so two processes never exceed a limit together. Messages that must wait
   get a later ``not_before`` and stay ``queued``.
3. Each claimed message waits for its slot, is sent, and its result is recorded in bulk by
   ``Dispatcher.flush`` (sent rows, history and outbox in one statement each).
4. Retryable failures go back to ``queued`` with ``not_before`` = backoff with full jitter; the last
   attempt makes a dead letter.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
import sqlalchemy as sa
from httpx_aiohttp import AiohttpTransport
from prometheus_client import Counter, Gauge, Histogram
from pydantic import TypeAdapter
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from services.sender import repository as repo
from services.sender.domain import (
    TIER_PERIOD,
    WINDOW,
    QuietHours,
    backoff_seconds,
    can_move,
    is_free_form,
    request_fingerprint,
    slot_quota,
)
from services.sender.models import (
    channels,
    message_history,
    messages,
    opt_outs,
    pair_pacing,
    pending_statuses,
    templates,
    tier_recipients,
    windows,
)
from services.sender.providers.base import (
    ChannelConfig,
    Failure,
    LookupUnsupported,
    Outbound,
    ProviderError,
    SendResult,
)
from services.sender.providers.registry import SPECS, load_adapter_class
from services.sender.providers.sandbox import SandboxProvider
from services.sender.providers.store import PostgresMappingStore
from services.sender.settings import SenderSettings
from shared.crypto import lookup_hash
from shared.db import UnitOfWork
from shared.events import (
    CloudEvent,
    ContactOptedIn,
    ContactOptedOut,
    DeliveryStatus,
    InboundReceived,
    MessageContent,
    MessageRequested,
    MessageStatusChanged,
    TemplateContent,
    TemplateStatusChanged,
    new_event,
    utcnow,
)
from shared.logging import get_logger
from shared.notify import Wakeup
from shared.service import ServiceRuntime

log = get_logger(__name__)
SOURCE = "/herald/sender"
DUE_CHANNEL = "sender_due"
NIL = uuid.UUID(int=0)
CONTENT = TypeAdapter(MessageContent)

SENT = Counter(
    "herald_sender_messages_total",
    "Provider call outcomes by channel, provider and error code",
    ["channel", "provider", "outcome", "code"],
)
RECONCILED = Counter(
    "herald_sender_reconciled_total",
    "Messages found in 'sending' after their sender died, by what reconciliation found",
    ["outcome"],
)
REQUEST_TO_PROVIDER = Histogram(
    "herald_sender_request_to_provider_seconds",
    "Time from request to provider call",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RATE_WAITS = Counter(
    "herald_sender_limit_waits_total",
    "Messages delayed by a limit or check, by which (pair, tier, quiet_hours, throughput)",
    ["channel", "limit"],
)
CHECK_FAILURES = Counter(
    "herald_sender_check_failures_total", "Messages failed before any provider call", ["reason"]
)
DEAD_LETTERS = Counter("herald_sender_dead_letters_total", "Messages that became dead letters", ["channel"])
BREAKER = Gauge(
    "herald_sender_channel_breaker_state",
    "Circuit breaker per channel: 0 closed, 1 open, 2 half-open (probing), 3 paused by an operator-level error",
    ["channel"],
)
CHANNELS_PAUSED = Gauge("herald_sender_channels_paused", "Channels paused (by 190/368-type errors)")


class IdempotencyConflict(Exception):
    pass


class UnknownChannel(Exception):
    pass


@dataclass(frozen=True)
class Accepted:
    message_id: uuid.UUID
    status: str
    created: bool


@dataclass
class Job:
    """One claimed message on its way to the provider."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    channel: ChannelConfig
    provider: str
    outbound: Outbound
    slot: float  # time.time() at which it may be sent
    created_at: datetime
    attempts: int
    correlation_id: str | None
    pair_interval: float
    note: str | None = None
    result: SendResult | None = None
    error: ProviderError | None = None


@dataclass
class Sender:
    """The sender's dependencies, given explicitly to every use case."""

    runtime: ServiceRuntime
    settings: SenderSettings
    lease: timedelta
    http: httpx.AsyncClient | None = None
    _providers: dict[str, Any] = field(default_factory=dict)
    _configs: dict[tuple[uuid.UUID, datetime], ChannelConfig] = field(default_factory=dict)
    _default_channels: dict[uuid.UUID, tuple[float, uuid.UUID]] = field(default_factory=dict)

    def hash_phone(self, phone: str) -> str:
        return lookup_hash(self.runtime.settings.secret_key.get_secret_value(), phone)

    def http_client(self) -> httpx.AsyncClient:
        if self.http is None:
            limits = httpx.Limits(
                max_connections=self.settings.http_max_connections,
                max_keepalive_connections=self.settings.http_max_connections,
            )
            self.http = httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits),
                timeout=self.settings.http_timeout_seconds,
            )
        return self.http

    def provider(self, name: str) -> Any:
        """The adapter for ``name`` (one per provider, shared by its channels)."""
        adapter = self._providers.get(name)
        if adapter is None:
            if name == "sandbox":
                adapter = SandboxProvider(self.runtime.engine, self.runtime.secrets)
            else:
                cls = load_adapter_class(name)
                adapter = cls(http=self.http_client(), store=PostgresMappingStore(self.runtime.engine))
            self._providers[name] = adapter
        return adapter

    def channel_config(self, row: Any) -> ChannelConfig:
        key = (row.id, row.updated_at)
        config = self._configs.get(key)
        if config is None:
            credentials = (
                json.loads(self.runtime.secrets.decrypt(row.credentials_enc)) if row.credentials_enc else {}
            )
            config = ChannelConfig(
                id=row.id,
                tenant_id=row.tenant_id,
                provider=row.provider,
                base_url=row.base_url or SPECS[row.provider].default_base_url or "",
                settings=dict(row.settings or {}),
                credentials=credentials,
            )
            self._configs = {k: v for k, v in self._configs.items() if k[0] != row.id}
            self._configs[key] = config
        return config

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()


# --- status events ------------------------------------------------------------------------------


def _status_event(
    tenant_id: uuid.UUID,
    msg: Any,
    status: str,
    previous: str | None,
    at: datetime,
    reason: str | None = None,
    provider_message_id: str | None = None,
    *,
    error_code: str | None = None,
    dead_letter: bool = False,
) -> CloudEvent[Any]:
    get = msg.get if isinstance(msg, dict) else msg._mapping.get
    return new_event(
        MessageStatusChanged(
            message_id=get("id"),
            status=status,
            previous_status=previous,
            at=at,
            reason=reason,
            error_code=error_code,
            dead_letter=dead_letter,
            provider=get("provider"),
            provider_message_id=provider_message_id,
            channel_id=get("channel_id"),
            correlation_id=get("correlation_id"),
        ),
        tenant_id=tenant_id,
        source=SOURCE,
        subject=str(get("id")),
    )


def _history(message_id: uuid.UUID, status: str, reason: str | None, at: datetime) -> dict[str, Any]:
    return {"message_id": message_id, "status": status, "reason": reason, "at": at}


async def _notify_due(uow: UnitOfWork) -> None:
    await uow.conn.execute(sa.select(sa.func.pg_notify(DUE_CHANNEL, "")))


# --- channels ---------------------------------------------------------------------------------


async def default_channel_id(sender: Sender, conn: Any, tenant_id: uuid.UUID) -> uuid.UUID:
    """The tenant's default channel; a tenant with none gets an implicit sandbox channel (no pair
    interval, no tier), so Herald runs with no credentials."""
    cached = sender._default_channels.get(tenant_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    found = await repo.default_channel(conn, tenant_id)
    if found is None:
        new_id = uuid.uuid4()
        await conn.execute(
            pg.insert(channels)
            .values(
                id=new_id,
                tenant_id=tenant_id,
                name="sandbox (implicit)",
                provider="sandbox",
                is_default=True,
                implicit=True,
                throughput_per_second=sender.settings.implicit_sandbox_throughput,
                portfolio=str(new_id),
                tier=None,
                pair_interval_seconds=0.0,
                enforce_window=False,
            )
            .on_conflict_do_nothing()
        )
        found = await repo.default_channel(conn, tenant_id)
        assert found is not None
    sender._default_channels[tenant_id] = (time.monotonic() + 5.0, found)
    return found


def forget_default(sender: Sender, tenant_id: uuid.UUID) -> None:
    sender._default_channels.pop(tenant_id, None)


# --- accepting a request ------------------------------------------------------------------------


def _fingerprint(req: MessageRequested) -> str:
    content = req.content.model_dump(mode="json") if req.content is not None else None
    fallback = req.fallback_template.model_dump(mode="json") if req.fallback_template is not None else None
    return request_fingerprint(
        req.to, req.text, req.priority, content, fallback, str(req.channel_id) if req.channel_id else None
    )


async def _insert_request(
    sender: Sender,
    uow: UnitOfWork,
    tenant_id: uuid.UUID,
    req: MessageRequested,
    now: datetime,
    *,
    channel_checked: bool = False,
) -> bool:
    """Insert the message ``queued`` (or ``failed`` when its channel is unknown) with its history
    and status event; False if it already exists (same id, or same idempotency key)."""
    channel_id = req.channel_id
    failure: str | None = None
    if channel_id is None:
        channel_id = await default_channel_id(sender, uow.conn, tenant_id)
    elif not channel_checked and not await repo.channel_exists(uow.conn, tenant_id, channel_id):
        failure = f"unknown channel {channel_id}: create it with POST /v1/channels or omit channel_id"
    content = req.resolved_content
    row = {
        "id": req.message_id,
        "tenant_id": tenant_id,
        "idempotency_key": req.idempotency_key,
        "request_hash": _fingerprint(req),
        "recipient_enc": sender.runtime.secrets.encrypt(req.to),
        "recipient_hash": sender.hash_phone(req.to),
        "text": content.body if content.kind == "text" else None,
        "content": content.model_dump(mode="json"),
        "fallback_template": req.fallback_template.model_dump(mode="json") if req.fallback_template else None,
        "channel_id": channel_id,
        "priority": req.priority,
        "origin": req.origin,
        "correlation_id": req.correlation_id,
        "status": "failed" if failure else "queued",
        "status_reason": failure,
        "error_code": "unknown_channel" if failure else None,
        "provider": None,
        "not_before": now,
        "created_at": now,
        "updated_at": now,
    }
    if not await repo.insert_message(uow.conn, row):
        return False
    await repo.add_history(uow.conn, req.message_id, "queued", None, now)
    uow.add_event(_status_event(tenant_id, row, "queued", None, now))
    if failure:
        await repo.add_history(uow.conn, req.message_id, "failed", failure, now)
        uow.add_event(
            _status_event(tenant_id, row, "failed", "queued", now, failure, error_code="unknown_channel")
        )
        CHECK_FAILURES.labels("unknown_channel").inc()
    else:
        await _notify_due(uow)
    return True


async def request_message(
    sender: Sender, tenant_id: uuid.UUID, req: MessageRequested, *, channel_checked: bool = False
) -> Accepted:
    """Accept a send request over HTTP. The same idempotency key with the same request returns
    the first message (``created`` False); with a different request it raises IdempotencyConflict."""

    async def attempt() -> Accepted | None:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            if req.idempotency_key:
                existing = await repo.find_by_idempotency_key(uow.conn, tenant_id, req.idempotency_key)
                if existing is not None:
                    if existing.request_hash != _fingerprint(req):
                        raise IdempotencyConflict(
                            f"idempotency_key {req.idempotency_key!r} was already used for a different "
                            f"request (message {existing.id}); use a new key for a new message"
                        )
                    return Accepted(existing.id, existing.status, created=False)
            try:
                inserted = await _insert_request(
                    sender, uow, tenant_id, req, now, channel_checked=channel_checked
                )
            except IntegrityError:
                return None
            if not inserted:
                return None  # a concurrent request with the same key won: read it back
            await uow.commit()
        return Accepted(req.message_id, "queued", created=True)

    result = await attempt()
    if result is None:
        result = await attempt()
    if result is None:
        raise IdempotencyConflict(
            f"idempotency_key {req.idempotency_key!r} is being used concurrently; retry"
        )
    return result


@dataclass(frozen=True)
class BatchItem:
    message_id: uuid.UUID
    status: str
    created: bool
    error: str | None = None


async def request_messages(
    sender: Sender, tenant_id: uuid.UUID, reqs: list[MessageRequested]
) -> list[BatchItem]:
    """Accept many send requests in one transaction (bulk sends): one multi-row insert for the
    messages, one for their history, one outbox write, one wake-up, instead of a transaction per
    message. Same rules as ``request_message``, reported per item: an idempotency key seen before
    returns the first message; one reused for a different request is that item's ``error``."""

    async def store() -> list[BatchItem]:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            default: uuid.UUID | None = None
            if any(r.channel_id is None for r in reqs):
                default = await default_channel_id(sender, uow.conn, tenant_id)
            rows = []
            for req in reqs:
                content = req.resolved_content
                rows.append(
                    {
                        "id": req.message_id,
                        "tenant_id": tenant_id,
                        "idempotency_key": req.idempotency_key,
                        "request_hash": _fingerprint(req),
                        "recipient_enc": sender.runtime.secrets.encrypt(req.to),
                        "recipient_hash": sender.hash_phone(req.to),
                        "text": content.body if content.kind == "text" else None,
                        "content": content.model_dump(mode="json"),
                        "fallback_template": req.fallback_template.model_dump(mode="json")
                        if req.fallback_template
                        else None,
                        "channel_id": req.channel_id or default,
                        "priority": req.priority,
                        "origin": req.origin,
                        "correlation_id": req.correlation_id,
                        "status": "queued",
                        "status_reason": None,
                        "error_code": None,
                        "provider": None,
                        "not_before": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            inserted = await repo.insert_messages(uow.conn, rows)
            fresh = [row for row in rows if row["id"] in inserted]
            if fresh:
                await repo.add_histories(
                    uow.conn, [_history(row["id"], "queued", None, now) for row in fresh]
                )
                for row in fresh:
                    uow.add_event(_status_event(tenant_id, row, "queued", None, now))
                await _notify_due(uow)
            items = []
            for req, row in zip(reqs, rows, strict=True):
                if row["id"] in inserted:
                    items.append(BatchItem(req.message_id, "queued", created=True))
                    continue
                existing = (
                    await repo.find_by_idempotency_key(uow.conn, tenant_id, req.idempotency_key)
                    if req.idempotency_key
                    else None
                )
                if existing is None:  # same message id twice in one batch: the first one stands
                    items.append(BatchItem(req.message_id, "queued", created=False))
                elif existing.request_hash != row["request_hash"]:
                    items.append(
                        BatchItem(
                            existing.id,
                            existing.status,
                            created=False,
                            error=f"idempotency_key {req.idempotency_key!r} was already used for a "
                            f"different request (message {existing.id}); use a new key for a new message",
                        )
                    )
                else:
                    items.append(BatchItem(existing.id, existing.status, created=False))
            await uow.commit()
        return items

    return await store()


async def on_requested(sender: Sender, event: CloudEvent[MessageRequested]) -> None:
    """Consume ``message.requested`` (scheduler, pipeline, other systems): store it once."""

    async def store() -> None:
        async with sender.runtime.uow() as uow:
            if await _insert_request(sender, uow, event.tenantid, event.data, utcnow()):
                await uow.commit()

    await sender.runtime.with_db("store requested message", store)


# --- the dispatcher -----------------------------------------------------------------------------


def _has_due_messages(now: datetime) -> sa.Exists:
    """Correlated EXISTS: the channel row has a queued message whose time has come."""
    return (
        sa.select(sa.literal(1))
        .where(
            messages.c.channel_id == channels.c.id,
            messages.c.status == "queued",
            messages.c.not_before <= now,
        )
        .exists()
    )


class Dispatcher:
    """Claims due messages in batches, sends each in its slot, records results in batches."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.settings = sender.settings
        self.runtime = sender.runtime
        self.in_flight = 0
        self._capacity = asyncio.Event()
        self._done: list[Job] = []
        self._flush_wanted = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # held for a whole claim pass: drain() takes it (and keeps it) so that a pass under way
        # when SIGTERM arrives finishes and hands its jobs over before the drain looks at them
        self._claiming = asyncio.Lock()
        # jobs waiting for their send slot (not yet at the provider): a drain hands them back
        self._waiting: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._released: list[Job] = []
        # claimed by this process and not yet recorded: their lease is renewed while it lives
        self._in_flight_ids: set[uuid.UUID] = set()

    # ---- claim loop ----

    async def run(self) -> None:
        wake = Wakeup(self.runtime.engine, DUE_CHANNEL)
        try:
            while not self.runtime.stopping.is_set():
                started = time.monotonic()
                try:
                    await wake.ensure_listening()
                    if self.in_flight >= self.settings.max_in_flight:
                        self._capacity.clear()
                        await asyncio.wait_for(self._capacity.wait(), timeout=1.0)
                        continue
                    async with self._claiming:
                        if self.runtime.stopping.is_set():
                            break
                        wait = await self.runtime.with_db("claim messages", self.claim)
                except TimeoutError:
                    continue
                except Exception as exc:
                    log.warning("claim failed", error=repr(exc)[:300])
                    wait = 1.0
                await wake.wait(wait)
                # Batch arrivals: every accepted request NOTIFYs, and one claim pass per message
                # would cost a transaction each. Passes are at least claim_interval apart.
                pause = self.settings.claim_interval_seconds - (time.monotonic() - started)
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            await wake.close()

    async def claim(self) -> float:
        """One claim pass over every channel with due messages; returns seconds until the next
        pass is useful (NOTIFY of a new message wakes the loop earlier)."""
        s = self.settings
        now = utcnow()
        horizon = s.claim_horizon_seconds
        jobs: list[Job] = []
        async with self.runtime.uow() as uow:
            conn = uow.conn
            due = _has_due_messages(now)
            rows = (
                await conn.execute(
                    sa.select(channels)
                    .where(
                        channels.c.deleted_at.is_(None),
                        channels.c.paused.is_(False),
                        sa.or_(channels.c.breaker_open_until.is_(None), channels.c.breaker_open_until <= now),
                        sa.or_(
                            channels.c.next_slot.is_(None),
                            channels.c.next_slot < now + timedelta(seconds=horizon),
                        ),
                        due,
                    )
                    .order_by(channels.c.id)
                    .with_for_update(skip_locked=True, of=channels)
                )
            ).all()
            for ch in rows:
                jobs.extend(await self._claim_channel(uow, ch, now))
            await uow.commit()
        for job in jobs:
            self._start(job)
        return await self._next_wait()

    async def _next_wait(self) -> float:
        now = utcnow()
        horizon = timedelta(seconds=self.settings.claim_horizon_seconds)
        async with self.runtime.engine.connect() as conn:
            future = (
                await conn.execute(
                    sa.select(sa.func.min(messages.c.not_before)).where(
                        messages.c.status == "queued", messages.c.not_before > now
                    )
                )
            ).scalar()
            due = _has_due_messages(now)
            busy = (
                await conn.execute(
                    sa.select(
                        sa.func.min(
                            sa.func.greatest(
                                sa.func.coalesce(channels.c.next_slot, now) - horizon,
                                sa.func.coalesce(channels.c.breaker_open_until, now),
                            )
                        )
                    ).where(channels.c.deleted_at.is_(None), channels.c.paused.is_(False), due)
                )
            ).scalar()
        candidates = [t for t in (future, busy) if t is not None]
        if not candidates:
            return 5.0
        wait = (min(candidates) - now).total_seconds()
        # a due channel another process holds right now: look again shortly
        return min(5.0, max(0.02, wait))

    async def _claim_channel(self, uow: UnitOfWork, ch: Row[Any], now: datetime) -> list[Job]:
        s = self.settings
        conn = uow.conn
        label = str(ch.id)
        if ch.quiet_hours:
            until = QuietHours.parse(ch.quiet_hours).quiet_until(now)
            if until is not None:
                result = await conn.execute(
                    sa.update(messages)
                    .where(
                        messages.c.channel_id == ch.id,
                        messages.c.status == "queued",
                        messages.c.not_before < until,
                    )
                    .values(not_before=until)
                )
                RATE_WAITS.labels(label, "quiet_hours").inc(result.rowcount or 0)
                return []
        try:
            config = self.sender.channel_config(ch)
        except Exception as exc:  # e.g. credentials encrypted with a key no longer configured
            reason = f"the channel's credentials cannot be read ({type(exc).__name__}): PATCH them again"
            await conn.execute(
                sa.update(channels).where(channels.c.id == ch.id).values(paused=True, pause_reason=reason)
            )
            BREAKER.labels(label).set(3)
            log.warning("channel paused: unreadable credentials", channel_id=label)
            return []
        probing = ch.consecutive_failures >= s.breaker_threshold
        quota = (
            1
            if probing
            else slot_quota(
                ch.throughput_per_second, ch.next_slot, now, s.claim_horizon_seconds, s.claim_batch
            )
        )
        if quota <= 0:
            return []
        rows = (
            await conn.execute(
                sa.select(messages)
                .where(
                    messages.c.channel_id == ch.id,
                    messages.c.status == "queued",
                    messages.c.not_before <= now,
                )
                .order_by(messages.c.priority.desc(), messages.c.not_before)
                .limit(quota)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return []
        hashes = list({r.recipient_hash for r in rows})
        opted = set(
            (
                await conn.execute(
                    sa.select(opt_outs.c.recipient_hash).where(
                        opt_outs.c.tenant_id == ch.tenant_id, opt_outs.c.recipient_hash.in_(hashes)
                    )
                )
            ).scalars()
        )
        blocked_templates = await _blocked_templates(conn, ch.tenant_id, rows)
        open_window: set[str] = set()
        if ch.enforce_window:
            open_window = set(
                (
                    await conn.execute(
                        sa.select(windows.c.recipient_hash).where(
                            windows.c.tenant_id == ch.tenant_id,
                            windows.c.recipient_hash.in_(hashes),
                            windows.c.channel_key.in_([ch.id, NIL]),
                            windows.c.last_inbound_at > now - WINDOW,
                        )
                    )
                ).scalars()
            )
        pacing: dict[str, datetime] = {}
        if ch.pair_interval_seconds > 0:
            pacing = dict(
                (
                    await conn.execute(
                        sa.select(pair_pacing.c.recipient_hash, pair_pacing.c.next_at).where(
                            pair_pacing.c.channel_id == ch.id, pair_pacing.c.recipient_hash.in_(hashes)
                        )
                    )
                ).all()
            )
        tier_known: set[str] = set()
        tier_count = 0
        tier_oldest: datetime | None = None
        if ch.tier is not None:
            await conn.execute(
                sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"{ch.tenant_id}:{ch.portfolio}")))
            )
            recent = tier_recipients.c.last_at > now - TIER_PERIOD
            scope = (tier_recipients.c.tenant_id == ch.tenant_id, tier_recipients.c.portfolio == ch.portfolio)
            tier_count, tier_oldest = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(tier_recipients.c.last_at)).where(*scope, recent)
                )
            ).one()
            tier_known = set(
                (
                    await conn.execute(
                        sa.select(tier_recipients.c.recipient_hash).where(
                            *scope, recent, tier_recipients.c.recipient_hash.in_(hashes)
                        )
                    )
                ).scalars()
            )

        rate = ch.throughput_per_second
        start = max(ch.next_slot or now, now)
        pair = timedelta(seconds=ch.pair_interval_seconds)
        allowed: list[tuple[Row[Any], dict[str, Any], str | None, datetime]] = []
        delayed: list[dict[str, Any]] = []
        failed: list[tuple[Row[Any], str, str, bool]] = []  # row, code, reason, dead letter
        pair_updates: dict[str, datetime] = {}
        tier_new: list[str] = []
        for r in rows:
            h = r.recipient_hash
            if h in opted:
                failed.append(
                    (
                        r,
                        "opted_out",
                        "the recipient opted out: POST /v1/opt-outs … DELETE to opt them back in",
                        False,
                    )
                )
                continue
            content = r.content or {"kind": "text", "body": r.text}
            note = None
            if ch.enforce_window and is_free_form(content) and h not in open_window:
                if r.fallback_template:
                    content = r.fallback_template
                    note = "24-hour window closed: sent the fallback template instead"
                else:
                    failed.append(
                        (
                            r,
                            "window_closed",
                            "the recipient's 24-hour customer-service window is closed (no inbound message "
                            "in the last 24 h): send a template, or give a fallback_template",
                            False,
                        )
                    )
                    continue
            blocked = template_block(content, blocked_templates)
            if blocked is not None:
                failed.append((r, *blocked, True))
                continue
            try:
                to = self.runtime.secrets.decrypt(r.recipient_enc)
                parsed = CONTENT.validate_python(content)
            except Exception as exc:  # one unreadable row must not stop the channel
                failed.append(
                    (
                        r,
                        "unreadable",
                        f"the stored message cannot be read ({type(exc).__name__}: {exc})",
                        False,
                    )
                )
                continue
            slot = start + timedelta(seconds=len(allowed) / rate)
            if pair:
                busy_until = pair_updates.get(h) or pacing.get(h)
                if busy_until is not None and busy_until > slot:
                    delayed.append({"_id": r.id, "not_before": busy_until})
                    RATE_WAITS.labels(label, "pair").inc()
                    continue
            if ch.tier is not None and h not in tier_known:
                if tier_count >= ch.tier:
                    delayed.append({"_id": r.id, "not_before": (tier_oldest or now) + TIER_PERIOD})
                    RATE_WAITS.labels(label, "tier").inc()
                    continue
                tier_count += 1
                tier_known.add(h)
                tier_new.append(h)
            if pair:
                pair_updates[h] = slot + pair
            allowed.append((r, content, note, slot, to, parsed))

        if delayed:
            await conn.execute(
                sa.update(messages)
                .where(messages.c.id == sa.bindparam("_id"))
                .values(not_before=sa.bindparam("not_before")),
                delayed,
            )
        for r, code, reason, dead in failed:
            await self._fail_now(uow, r, code, reason, now, dead_letter=dead)
        if pair_updates:
            stmt = pg.insert(pair_pacing)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[pair_pacing.c.channel_id, pair_pacing.c.recipient_hash],
                    set_={"next_at": stmt.excluded.next_at},
                ),
                [{"channel_id": ch.id, "recipient_hash": h, "next_at": t} for h, t in pair_updates.items()],
            )
        if tier_new:
            stmt = pg.insert(tier_recipients)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[
                        tier_recipients.c.tenant_id,
                        tier_recipients.c.portfolio,
                        tier_recipients.c.recipient_hash,
                    ],
                    set_={"last_at": stmt.excluded.last_at},
                ),
                [
                    {
                        "tenant_id": ch.tenant_id,
                        "portfolio": ch.portfolio,
                        "recipient_hash": h,
                        "last_at": now,
                    }
                    for h in tier_new
                ],
            )
        if not allowed:
            return []
        channel_values: dict[str, Any] = {"next_slot": start + timedelta(seconds=len(allowed) / rate)}
        if probing:
            # one probe at a time: nobody else probes until this one answers or the cool-down ends
            channel_values["breaker_open_until"] = now + timedelta(seconds=s.breaker_cooldown_seconds)
            BREAKER.labels(label).set(2)
        await conn.execute(sa.update(channels).where(channels.c.id == ch.id).values(**channel_values))
        ids = [a[0].id for a in allowed]
        await conn.execute(
            sa.update(messages)
            .where(messages.c.id.in_(ids))
            .values(
                status="sending",
                sending_started_at=now,
                attempts=messages.c.attempts + 1,
                provider=ch.provider,
                updated_at=now,
            )
        )
        replaced = [{"_id": a[0].id, "content": a[1]} for a in allowed if a[2]]
        if replaced:
            await conn.execute(
                sa.update(messages)
                .where(messages.c.id == sa.bindparam("_id"))
                .values(content=sa.bindparam("content")),
                replaced,
            )
        history = []
        jobs = []
        for r, _content, note, slot, to, parsed in allowed:
            reason = note or (f"attempt {r.attempts + 1}" if r.attempts else None)
            history.append(_history(r.id, "sending", reason, now))
            uow.add_event(
                _status_event(
                    r.tenant_id,
                    {**r._mapping, "provider": ch.provider},
                    "sending",
                    "queued",
                    now,
                    reason,
                )
            )
            jobs.append(
                Job(
                    id=r.id,
                    tenant_id=r.tenant_id,
                    channel=config,
                    provider=ch.provider,
                    outbound=Outbound(
                        message_id=r.id,
                        tenant_id=r.tenant_id,
                        to=to,
                        content=parsed,
                    ),
                    slot=slot.timestamp(),
                    created_at=r.created_at,
                    attempts=r.attempts + 1,
                    correlation_id=r.correlation_id,
                    pair_interval=ch.pair_interval_seconds,
                    note=note,
                )
            )
        await conn.execute(sa.insert(message_history), history)
        return jobs

    async def _fail_now(
        self,
        uow: UnitOfWork,
        r: Row[Any],
        code: str,
        reason: str,
        now: datetime,
        *,
        dead_letter: bool = False,
    ) -> None:
        await uow.conn.execute(
            sa.update(messages)
            .where(messages.c.id == r.id)
            .values(
                status="failed",
                status_reason=reason,
                error_code=code,
                dead_letter=dead_letter,
                updated_at=now,
            )
        )
        await repo.add_history(uow.conn, r.id, "failed", reason, now)
        uow.add_event(
            _status_event(
                r.tenant_id, r, "failed", r.status, now, reason, error_code=code, dead_letter=dead_letter
            )
        )
        CHECK_FAILURES.labels(code).inc()
        if dead_letter:
            DEAD_LETTERS.labels(str(r.channel_id)).inc()

    # ---- sending ----

    def _start(self, job: Job) -> None:
        self.in_flight += 1
        self._in_flight_ids.add(job.id)
        task = asyncio.create_task(self._send(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, job: Job) -> None:
        try:
            delay = job.slot - time.time()
            if delay > 0:
                RATE_WAITS.labels(str(job.channel.id), "throughput").inc()
                self._waiting[job.id] = asyncio.current_task()  # type: ignore[assignment]
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    if not self.runtime.stopping.is_set():
                        raise
                    # drain() cancelled the wait: the provider was not called, hand the job back
                    self._released.append(job)
                    return
                finally:
                    self._waiting.pop(job.id, None)
            REQUEST_TO_PROVIDER.observe(max(0.0, (utcnow() - job.created_at).total_seconds()))
            try:
                provider = self.sender.provider(job.provider)
            except ImportError:
                job.error = ProviderError(
                    f"the {job.provider} adapter is not installed in this sender",
                    failure=Failure.PERMANENT,
                    code="adapter_missing",
                )
            else:
                try:
                    job.result = await provider.send(job.channel, job.outbound)
                except ProviderError as exc:
                    job.error = exc
                except Exception as exc:  # an adapter bug must not lose the message
                    log.exception("provider adapter raised", provider=job.provider)
                    job.error = ProviderError(
                        f"{job.provider} adapter error: {type(exc).__name__}",
                        failure=Failure.RETRY,
                        code="adapter",
                    )
            outcome = "sent" if job.error is None else ("retry" if job.error.retryable else "failed")
            SENT.labels(
                str(job.channel.id), job.provider, outcome, (job.error.code if job.error else "") or ""
            ).inc()
            self._done.append(job)
            self._flush_wanted.set()
        finally:
            self.in_flight -= 1
            self._capacity.set()
            if job.result is None and job.error is None:  # released or cancelled: no result to record
                self._in_flight_ids.discard(job.id)

    # ---- recording results ----

    async def flush_forever(self) -> None:
        while not self.runtime.stopping.is_set() or self._done or self._tasks:
            if not self._done:
                self._flush_wanted.clear()
                try:
                    await asyncio.wait_for(self._flush_wanted.wait(), timeout=1.0)
                except TimeoutError:
                    continue
                await asyncio.sleep(0.01)  # gather a batch
            done, self._done = self._done, []
            try:
                await self.runtime.with_db("record results", partial(self.record, done))
            except Exception:
                log.exception("recording results failed; they are retried")
                self._done = done + self._done
                await asyncio.sleep(1.0)

    async def drain(self, seconds: float) -> None:
        """On shutdown (``runtime.stopping`` is set): no new claim pass starts, a pass under way
        finishes, jobs still waiting for their slot go back to ``queued`` without a provider call,
        and calls already at the provider finish and have their results recorded. Whatever is still
        at the provider when ``seconds`` run out stays ``sending`` and is reconciled after the lease
        by the next process (see reconcile_orphans)."""
        deadline = time.monotonic() + seconds
        try:
            async with asyncio.timeout(seconds):
                await self._claiming.acquire()  # kept: the claim loop sees ``stopping`` and ends
        except TimeoutError:
            log.warning("a claim pass did not finish within the drain timeout")
        for task in list(self._waiting.values()):
            task.cancel()
        while (self._tasks or self._done or self._released) and time.monotonic() < deadline:
            if self._released:
                released, self._released = self._released, []
                await self.runtime.with_db("release jobs", partial(self.release, released))
            elif self._done:
                done, self._done = self._done, []
                await self.runtime.with_db("record results", partial(self.record, done))
            else:
                await asyncio.sleep(0.02)
        left = len(self._tasks)
        if left:
            log.warning("drain timed out: messages stay 'sending' until reconciled", in_flight=left)

    async def renew_leases_forever(self) -> None:
        """Keep this process's claims alive: every third of the lease, ``sending_started_at`` of
        each message claimed here and not yet recorded moves to now. The lease then expires only
        when its process is gone, so a slow provider (a Chatwoot send is several calls, each with
        its own timeout) is never taken for a crash and sent a second time. Runs through the
        drain, until the runtime cancels it."""
        interval = max(0.1, self.sender.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._in_flight_ids)
            if not ids:
                continue
            try:
                async with self.runtime.engine.begin() as conn:
                    await conn.execute(
                        sa.update(messages)
                        .where(messages.c.id.in_(ids), messages.c.status == "sending")
                        .values(sending_started_at=utcnow())
                    )
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("lease renewal failed", error=repr(exc)[:200], in_flight=len(ids))

    async def release(self, jobs: Sequence[Job]) -> None:
        """Hand claimed jobs that never reached the provider back to the queue."""
        now = utcnow()
        async with self.runtime.uow() as uow:
            result = await uow.conn.execute(
                sa.update(messages)
                .where(messages.c.id.in_([j.id for j in jobs]), messages.c.status == "sending")
                .values(
                    status="queued",
                    sending_started_at=None,
                    attempts=messages.c.attempts - 1,
                    not_before=now,
                    updated_at=now,
                )
                .returning(messages.c.id)
            )
            released = list(result.scalars())
            if released:
                await uow.conn.execute(
                    sa.insert(message_history),
                    [
                        _history(i, "queued", "sender stopping: released before the provider call", now)
                        for i in released
                    ],
                )
            await uow.commit()
        log.info("released claimed messages on shutdown", count=len(released))

    async def record(self, done: Sequence[Job]) -> None:
        now = utcnow()
        sent = [j for j in done if j.error is None]
        failed = [j for j in done if j.error is not None]
        async with self.runtime.uow() as uow:
            conn = uow.conn
            recorded: list[Job] = []
            if sent:
                result = await conn.execute(
                    sa.update(messages)
                    .where(messages.c.id == sa.bindparam("_id"), messages.c.status == "sending")
                    .values(
                        status="sent",
                        provider_message_id=sa.bindparam("pmid"),
                        status_reason=sa.bindparam("reason"),
                        # an earlier attempt's failure no longer applies to a message that was sent
                        error_code=None,
                        sending_started_at=None,
                        updated_at=now,
                    ),
                    [
                        {
                            "_id": j.id,
                            "pmid": j.result.provider_message_id,  # type: ignore[union-attr]
                            "reason": j.result.history_note or j.note,  # type: ignore[union-attr]
                        }
                        for j in sent
                    ],
                )
                del result
                recorded = sent
                await conn.execute(
                    sa.insert(message_history),
                    [_history(j.id, "sent", j.result.history_note, now) for j in recorded],  # type: ignore[union-attr]
                )
                for j in recorded:
                    uow.add_event(
                        _status_event(
                            j.tenant_id,
                            {
                                "id": j.id,
                                "provider": j.provider,
                                "channel_id": j.channel.id,
                                "correlation_id": j.correlation_id,
                            },
                            "sent",
                            "sending",
                            now,
                            j.result.history_note,  # type: ignore[union-attr]
                            j.result.provider_message_id,  # type: ignore[union-attr]
                        )
                    )
                for channel_id in sorted({j.channel.id for j in recorded}):
                    closed = await conn.execute(
                        sa.update(channels)
                        .where(
                            channels.c.id == channel_id,
                            sa.or_(
                                channels.c.consecutive_failures > 0,
                                channels.c.breaker_open_until.is_not(None),
                            ),
                        )
                        .values(consecutive_failures=0, breaker_open_until=None)
                    )
                    if closed.rowcount:
                        log.info("channel breaker closed", channel_id=str(channel_id))
                    BREAKER.labels(str(channel_id)).set(0)
            for j in failed:
                await self._record_failure(uow, j, now)
            if failed:
                await _notify_due(uow)  # a retry is due soon: the claim loops recompute their sleep
            await uow.commit()
        self._in_flight_ids.difference_update(j.id for j in done)
        if sent:
            await self._apply_pending([j.result.provider_message_id for j in sent])  # type: ignore[union-attr]

    async def _record_failure(self, uow: UnitOfWork, job: Job, now: datetime) -> None:
        s = self.settings
        conn = uow.conn
        exc = job.error
        assert exc is not None
        current = await repo.lock_message(conn, job.id)
        if current is None or current.status != "sending":
            return
        channel_label = str(job.channel.id)
        code = exc.code or exc.failure.value
        reason = f"{job.provider}: {exc.reason}"
        if exc.retryable and job.attempts < s.max_attempts:
            delay = backoff_seconds(job.attempts, base=s.backoff_base_seconds, cap=s.backoff_cap_seconds)
            if exc.failure is Failure.RETRY_RECIPIENT:
                # the pair limit: this recipient only waits longer (≥ 6 s, growing), others carry on
                delay = max(delay, max(6.0, job.pair_interval) * (2 ** (job.attempts - 1)))
            if exc.retry_after:
                delay = max(delay, exc.retry_after)
            if job.pair_interval > 0:
                # the claim will not send to this recipient before the pair interval allows, so
                # the history says when the retry really happens, not the backoff alone
                next_at = await repo.pair_next_at(conn, job.channel.id, current.recipient_hash)
                if next_at is not None:
                    delay = max(delay, (next_at - now).total_seconds())
            note = (
                f"attempt {job.attempts}/{s.max_attempts} failed ({code}), retry in {delay:.1f} s: {reason}"
            )
            await repo.update_message(
                conn,
                job.id,
                status="queued",
                status_reason=note,
                error_code=code,
                sending_started_at=None,
                not_before=now + timedelta(seconds=delay),
                updated_at=now,
            )
            await repo.add_history(conn, job.id, "queued", note, now)
            uow.add_event(
                _status_event(job.tenant_id, current, "queued", "sending", now, note, error_code=code)
            )
            if exc.failure is Failure.RETRY:
                await self._count_channel_failure(uow, job, now, reason)
            return
        dead = exc.failure in (
            Failure.RETRY,
            Failure.RETRY_RECIPIENT,
            Failure.PERMANENT,
            Failure.PAUSE_CHANNEL,
        )
        if exc.retryable:
            reason = f"gave up after {job.attempts} attempts: {reason}"
        await repo.update_message(
            conn,
            job.id,
            status="failed",
            status_reason=reason,
            error_code=code,
            dead_letter=dead,
            sending_started_at=None,
            updated_at=now,
        )
        await repo.add_history(conn, job.id, "failed", reason, now)
        uow.add_event(
            _status_event(
                job.tenant_id, current, "failed", "sending", now, reason, error_code=code, dead_letter=dead
            )
        )
        if dead:
            DEAD_LETTERS.labels(channel_label).inc()
        if exc.failure is Failure.OPTED_OUT:
            await _upsert_opt_out(
                self.sender, conn, job.tenant_id, job.outbound.to, f"{job.provider} error {code}", now
            )
        content = job.outbound.content
        if job.provider == "meta" and code in TEMPLATE_ERROR_STATUS and isinstance(content, TemplateContent):
            # Meta's refusal says what its webhook may not have told us (yet): the next messages
            # with this template fail without a call, as if template.status_changed had arrived
            await _upsert_template(
                conn, job.tenant_id, content.name, content.language, TEMPLATE_ERROR_STATUS[code], reason, now
            )
        if exc.failure is Failure.PAUSE_CHANNEL:
            await conn.execute(
                sa.update(channels)
                .where(channels.c.id == job.channel.id)
                .values(
                    paused=True,
                    pause_reason=f"{reason} (error {code}); PATCH the channel to resume",
                    updated_at=now,
                )
            )
            BREAKER.labels(channel_label).set(3)
            log.warning("channel paused", channel_id=channel_label, code=code)
        if exc.failure is Failure.RETRY:
            await self._count_channel_failure(uow, job, now, reason)

    async def _count_channel_failure(self, uow: UnitOfWork, job: Job, now: datetime, reason: str) -> None:
        s = self.settings
        row = (
            await uow.conn.execute(
                sa.update(channels)
                .where(channels.c.id == job.channel.id)
                .values(consecutive_failures=channels.c.consecutive_failures + 1)
                .returning(channels.c.consecutive_failures)
            )
        ).first()
        if row is not None and row.consecutive_failures >= s.breaker_threshold:
            await uow.conn.execute(
                sa.update(channels)
                .where(channels.c.id == job.channel.id)
                .values(breaker_open_until=now + timedelta(seconds=s.breaker_cooldown_seconds))
            )
            BREAKER.labels(str(job.channel.id)).set(1)
            log.warning(
                "channel breaker open",
                channel_id=str(job.channel.id),
                failures=row.consecutive_failures,
                cooldown=s.breaker_cooldown_seconds,
            )

    async def _apply_pending(self, provider_message_ids: list[str]) -> None:
        """Apply delivery statuses that arrived before the send was recorded."""
        async with self.runtime.engine.connect() as conn:
            early = (
                await conn.execute(
                    sa.select(pending_statuses).where(
                        pending_statuses.c.provider_message_id.in_(provider_message_ids)
                    )
                )
            ).all()
        for p in early:
            await apply_delivery_status(
                self.sender, p.provider_message_id, p.status, p.at, p.error_code, p.reason, pending_id=p.id
            )


# --- the template catalogue ----------------------------------------------------------------------

#: Meta's template statuses (message_template_status_update ``event``) under which a send fails at
#: Meta (132001 not approved, 132015 paused, 132016 disabled): Herald does not call the provider.
#: APPROVED, REINSTATED and FLAGGED (quality dropping, still sendable) are sendable.
UNSENDABLE_TEMPLATE_STATUSES = frozenset(
    {"PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL", "PENDING_DELETION", "DELETED", "ARCHIVED"}
)


def _template_names(rows: Sequence[Row[Any]]) -> set[str]:
    names = set()
    for r in rows:
        for content in (r.content, r.fallback_template):
            if isinstance(content, dict) and content.get("kind") == "template" and content.get("name"):
                names.add(str(content["name"]))
    return names


async def _blocked_templates(
    conn: Any, tenant_id: uuid.UUID, rows: Sequence[Row[Any]]
) -> dict[tuple[str, str], Row[Any]]:
    """The templates of this batch that Meta said cannot be sent, by (name, language)."""
    names = _template_names(rows)
    if not names:
        return {}
    found = await conn.execute(
        sa.select(templates).where(
            templates.c.tenant_id == tenant_id,
            templates.c.name.in_(sorted(names)),
            templates.c.status.in_(sorted(UNSENDABLE_TEMPLATE_STATUSES)),
        )
    )
    return {(t.name, t.language): t for t in found}


def template_block(content: Any, blocked: dict[tuple[str, str], Row[Any]]) -> tuple[str, str] | None:
    """(error code, reason) when ``content`` is a template Meta will not send, else None."""
    if not blocked or not isinstance(content, dict) or content.get("kind") != "template":
        return None
    t = blocked.get((str(content.get("name")), str(content.get("language"))))
    if t is None:
        return None
    why = f": {t.reason}" if t.reason else ""
    return (
        f"template_{t.status.lower()}",
        f"template {t.name!r} ({t.language}) is {t.status} at Meta since {t.at.isoformat()}{why}; "
        "not sent. Replay the dead letter once Meta approves or reinstates it "
        "(GET /v1/templates shows the status)",
    )


#: Meta send errors that tell a template's status (error-codes.json: 132015 paused, 132016 disabled)
TEMPLATE_ERROR_STATUS = {"132015": "PAUSED", "132016": "DISABLED"}


async def _upsert_template(
    conn: Any,
    tenant_id: uuid.UUID,
    name: str,
    language: str,
    status: str,
    reason: str | None,
    at: datetime,
) -> None:
    """Record Meta's word on a template; an older word arriving late changes nothing."""
    stmt = pg.insert(templates).values(
        tenant_id=tenant_id, name=name, language=language, status=status.upper(), reason=reason, at=at
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[templates.c.tenant_id, templates.c.name, templates.c.language],
            set_={"status": stmt.excluded.status, "reason": stmt.excluded.reason, "at": stmt.excluded.at},
            where=templates.c.at <= stmt.excluded.at,
        )
    )


async def on_template_status(sender: Sender, event: CloudEvent[TemplateStatusChanged]) -> None:
    data = event.data

    async def write() -> None:
        async with sender.runtime.engine.begin() as conn:
            await _upsert_template(
                conn, event.tenantid, data.template_name, data.language, data.status, data.reason, data.at
            )

    await sender.runtime.with_db("template status", write)


# --- reconciliation -----------------------------------------------------------------------------


async def reconcile_orphans(sender: Sender) -> int:
    """One sweep over messages whose sender died while they were ``sending`` (lease expired).

    Rule: ask the provider whether it has the message (``lookup``). If it does, the message is
    ``sent``; if it does not, or cannot tell (Meta keeps no client reference), the message is
    queued again and resent — a possible duplicate is preferred to a silent loss. Every case is
    counted in ``herald_sender_reconciled_total``."""
    now = utcnow()
    cutoff = now - sender.lease
    count = 0
    async with sender.runtime.uow() as uow:
        rows = await repo.orphaned_sending(uow.conn, cutoff, 100)
        for row in rows:
            count += 1
            found = None
            outcome = "resent"
            ch = await repo.get_channel_any(uow.conn, row.channel_id) if row.channel_id else None
            if ch is not None:
                try:
                    content = CONTENT.validate_python(row.content or {"kind": "text", "body": row.text})
                    outbound = Outbound(
                        row.id, row.tenant_id, sender.runtime.secrets.decrypt(row.recipient_enc), content
                    )
                    found = await sender.provider(ch.provider).lookup(sender.channel_config(ch), outbound)
                except LookupUnsupported:
                    outcome = "resent_unverifiable"
                except Exception as exc:
                    log.warning("reconcile lookup failed", error=repr(exc)[:200])
                    outcome = "resent_unverifiable"
            if found is not None:
                reason = "reconciled after a crash: the provider had it"
                await repo.update_message(
                    uow.conn,
                    row.id,
                    status="sent",
                    status_reason=reason,
                    provider_message_id=found,
                    sending_started_at=None,
                    updated_at=now,
                )
                await repo.add_history(uow.conn, row.id, "sent", reason, now)
                uow.add_event(_status_event(row.tenant_id, row, "sent", "sending", now, reason, found))
                RECONCILED.labels("already_sent").inc()
            else:
                reason = f"reconciled after a crash: sending again ({outcome})"
                await repo.update_message(
                    uow.conn,
                    row.id,
                    status="queued",
                    status_reason=reason,
                    sending_started_at=None,
                    not_before=now,
                    updated_at=now,
                )
                await repo.add_history(uow.conn, row.id, "queued", reason, now)
                uow.add_event(_status_event(row.tenant_id, row, "queued", "sending", now, reason))
                RECONCILED.labels(outcome).inc()
            log.warning(
                "reconciled orphaned message", message_id=str(row.id), outcome="sent" if found else outcome
            )
        if rows:
            await _notify_due(uow)
        await uow.commit()
    return count


async def sweep_orphans_forever(sender: Sender) -> None:
    interval = max(0.5, sender.lease.total_seconds() / 2)
    while not sender.runtime.stopping.is_set():
        try:
            await reconcile_orphans(sender)
        except Exception as exc:
            log.warning("orphan sweep failed", error=repr(exc)[:200])
        await asyncio.sleep(interval)


# --- events from ingest and other systems -------------------------------------------------------

DELIVERY_RANK = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",
    "failed": "failed",
}


async def apply_delivery_status(
    sender: Sender,
    provider_message_id: str,
    status: str,
    at: datetime,
    error_code: str | None,
    error_message: str | None,
    *,
    pending_id: int | None = None,
) -> bool:
    """Move a message forward by its provider id (never backwards). Returns False when no message
    has that id yet (the status is kept and applied when the send is recorded)."""
    new = DELIVERY_RANK[status]

    async def write() -> bool:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            row = (
                await uow.conn.execute(
                    sa.select(messages)
                    .where(messages.c.provider_message_id == provider_message_id)
                    .with_for_update()
                )
            ).first()
            if pending_id is not None:
                await uow.conn.execute(sa.delete(pending_statuses).where(pending_statuses.c.id == pending_id))
            if row is None:
                if pending_id is None:
                    await uow.conn.execute(
                        sa.insert(pending_statuses).values(
                            provider_message_id=provider_message_id,
                            status=new,
                            error_code=error_code,
                            reason=error_message,
                            at=at,
                        )
                    )
                await uow.commit()
                return False
            if can_move(row.status, new):
                reason = None
                if new == "failed":
                    reason = f"{row.provider} reported failure {error_code or ''}: {error_message or 'no details'}".strip()
                await repo.update_message(
                    uow.conn,
                    row.id,
                    status=new,
                    status_reason=reason,
                    updated_at=now,
                    **({"error_code": error_code} if new == "failed" else {}),
                )
                await repo.add_history(uow.conn, row.id, new, reason, at)
                uow.add_event(
                    _status_event(
                        row.tenant_id,
                        row,
                        new,
                        row.status,
                        at,
                        reason,
                        provider_message_id,
                        error_code=error_code,
                    )
                )
                if new == "failed" and error_code == "131050":
                    phone = sender.runtime.secrets.decrypt(row.recipient_enc)
                    await _upsert_opt_out(sender, uow.conn, row.tenant_id, phone, "provider error 131050", at)
            await uow.commit()
            return True

    return await sender.runtime.with_db("apply delivery status", write)


async def on_delivery_status(sender: Sender, event: CloudEvent[DeliveryStatus]) -> None:
    d = event.data
    await apply_delivery_status(sender, d.provider_message_id, d.status, d.at, d.error_code, d.error_message)


async def on_inbound(sender: Sender, event: CloudEvent[InboundReceived]) -> None:
    """The recipient wrote: their 24-hour customer-service window (re)opens."""
    d = event.data

    async def write() -> None:
        stmt = pg.insert(windows).values(
            tenant_id=event.tenantid,
            recipient_hash=sender.hash_phone(d.from_phone),
            channel_key=d.channel_id or NIL,
            last_inbound_at=d.received_at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[windows.c.tenant_id, windows.c.recipient_hash, windows.c.channel_key],
            set_={
                "last_inbound_at": sa.func.greatest(windows.c.last_inbound_at, stmt.excluded.last_inbound_at)
            },
        )
        async with sender.runtime.engine.begin() as conn:
            await conn.execute(stmt)

    await sender.runtime.with_db("open window", write)


async def _upsert_opt_out(
    sender: Sender, conn: Any, tenant_id: uuid.UUID, phone: str, reason: str | None, at: datetime
) -> None:
    stmt = pg.insert(opt_outs).values(
        tenant_id=tenant_id,
        recipient_hash=sender.hash_phone(phone),
        recipient_enc=sender.runtime.secrets.encrypt(phone),
        reason=reason,
        at=at,
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[opt_outs.c.tenant_id, opt_outs.c.recipient_hash],
            set_={"reason": stmt.excluded.reason, "at": stmt.excluded.at},
            where=opt_outs.c.at <= stmt.excluded.at,
        )
    )


async def opt_out(sender: Sender, tenant_id: uuid.UUID, phone: str, reason: str | None, at: datetime) -> None:
    async def write() -> None:
        async with sender.runtime.engine.begin() as conn:
            await _upsert_opt_out(sender, conn, tenant_id, phone, reason, at)

    await sender.runtime.with_db("opt out", write)


async def opt_in(sender: Sender, tenant_id: uuid.UUID, phone: str, at: datetime | None = None) -> bool:
    async def write() -> bool:
        async with sender.runtime.engine.begin() as conn:
            q = sa.delete(opt_outs).where(
                opt_outs.c.tenant_id == tenant_id, opt_outs.c.recipient_hash == sender.hash_phone(phone)
            )
            if at is not None:
                q = q.where(opt_outs.c.at <= at)
            return bool((await conn.execute(q)).rowcount)

    return await sender.runtime.with_db("opt in", write)


async def on_opted_out(sender: Sender, event: CloudEvent[ContactOptedOut]) -> None:
    await opt_out(
        sender, event.tenantid, event.data.phone, event.data.reason or "contact.opted_out", event.data.at
    )


async def on_opted_in(sender: Sender, event: CloudEvent[ContactOptedIn]) -> None:
    await opt_in(sender, event.tenantid, event.data.phone, event.data.at)


# --- dead letters -------------------------------------------------------------------------------


async def replay(sender: Sender, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Send dead letters again: back to ``queued`` with fresh attempts. Returns the ids replayed."""

    async def write() -> list[uuid.UUID]:
        now = utcnow()
        async with sender.runtime.uow() as uow:
            rows = (
                await uow.conn.execute(
                    sa.select(messages)
                    .where(
                        messages.c.tenant_id == tenant_id,
                        messages.c.id.in_(ids),
                        messages.c.dead_letter.is_(True),
                    )
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                reason = "replayed from the dead letters"
                await repo.update_message(
                    uow.conn,
                    row.id,
                    status="queued",
                    status_reason=reason,
                    dead_letter=False,
                    attempts=0,
                    error_code=None,
                    not_before=now,
                    updated_at=now,
                )
                await repo.add_history(uow.conn, row.id, "queued", reason, now)
                uow.add_event(_status_event(tenant_id, row, "queued", "failed", now, reason))
            if rows:
                await _notify_due(uow)
            await uow.commit()
            return [r.id for r in rows]

    return await sender.runtime.with_db("replay dead letters", write)
