"""Dispatch: claim → admit → send → record.

Every sender process runs one ``Dispatcher``. A claim pass locks the channels with due messages
(``FOR UPDATE SKIP LOCKED``), loads the facts admission needs (opt-outs, windows, blocked
templates, pair pacing, tier usage), lets ``domain.admit`` decide each message, and writes the
decision — admitted ones ``sending`` with a reserved slot, delayed ones a later ``not_before``,
refused ones ``failed`` — in one transaction (``claim.claim_channel``), so two processes never
exceed a limit together.
Each admitted message waits for its slot, is sent, and its result is recorded in bulk; a failure
is decided by ``domain.after_failure``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.sender import domain, sessions, status, templates
from services.sender import repository as repo
from services.sender.catalogues import record_opt_out, record_template_status
from services.sender.claim import Job, claim_channel
from services.sender.context import Sender
from services.sender.metrics import (
    AMBIGUOUS,
    BREAKER,
    DEAD_LETTERS,
    LEASE_RENEWAL_SECONDS,
    RATE_WAITS,
    REQUEST_TO_PROVIDER,
    SENT,
)
from services.sender.outcomes import apply_delivery_status
from services.sender.providers.base import Failure, ProviderError, SendResult
from services.sender.providers.gateway import SessionDown
from shared import tracing
from shared.db import UnitOfWork
from shared.events import TemplateContent, utcnow
from shared.logging import get_logger
from shared.notify import Wakeup

log = get_logger(__name__)
#: a provider's throughput limit is counted over one second (Meta: 130429)
THROTTLE_WINDOW = timedelta(seconds=1)
#: a job late for this many fresh slots in a row goes out late: an overloaded process must not
#: starve its own messages (the late waits show in herald_sender_limit_waits_total{limit="late"})
MAX_FRESH_SLOTS = 5


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
        wake = Wakeup(self.runtime.engine, repo.DUE_CHANNEL)
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
        now = utcnow()
        jobs: list[Job] = []
        async with self.runtime.uow() as uow:
            for ch in await repo.lock_due_channels(uow.conn, now, self.settings.claim_horizon_seconds):
                jobs.extend(await claim_channel(self.sender, uow, ch, now))
            await uow.commit()
        for job in jobs:
            self._start(job)
        return await self._next_wait()

    async def _next_wait(self) -> float:
        now = utcnow()
        async with self.runtime.engine.connect() as conn:
            candidates = await repo.next_due(conn, now, self.settings.claim_horizon_seconds)
        if not candidates:
            return 5.0
        wait = (min(candidates) - now).total_seconds()
        # a due channel another process holds right now: look again shortly
        return min(5.0, max(0.02, wait))

    # ---- sending ----

    def _start(self, job: Job) -> None:
        self.in_flight += 1
        self._in_flight_ids.add(job.id)
        task = asyncio.create_task(self._send_traced(job) if tracing.enabled() else self._send(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_traced(self, job: Job) -> None:
        """``_send`` in a span continuing the trace of the request that queued the message."""
        with tracing.span(
            "sender send",
            parent=tracing.context_from(job.traceparent),
            attributes={
                "herald.message_id": str(job.id),
                "herald.provider": job.provider,
                "herald.attempt": job.attempts,
            },
        ) as current:
            job.send_traceparent = tracing.traceparent()  # the result's message.status continues it
            ids = {
                "message_id": str(job.id),
                **({"correlation_id": job.correlation_id} if job.correlation_id else {}),
            }
            with structlog.contextvars.bound_contextvars(**ids):
                await self._send(job)
            if current is not None and job.error is not None:
                current.set_status(Status(StatusCode.ERROR, job.error.code or "provider error"))

    @staticmethod
    async def _traced_call(job: Job, call: Awaitable[SendResult]) -> SendResult:
        """The provider call in a CLIENT span (the adapter's HTTP request, or the sandbox's write)."""
        attributes: dict[str, Any] = {
            "herald.provider": job.provider,
            "herald.channel_id": str(job.channel.id),
        }
        address = urlsplit(job.channel.base_url).hostname if job.channel.base_url else None
        if address:
            attributes["server.address"] = address
        with tracing.span(f"{job.provider} send", kind=SpanKind.CLIENT, attributes=attributes) as current:
            try:
                sent = await call
            except ProviderError as exc:
                if current is not None:
                    current.set_attribute("error.type", exc.code or str(exc.failure))
                raise
            if current is not None:
                current.set_attribute("herald.provider_message_id", sent.provider_message_id)
            return sent

    async def _send(self, job: Job) -> None:
        try:
            provider = None
            note = None
            try:
                provider = self.sender.provider(job.provider)
                # before the wait for the slot: a catalogue read must not make the call late
                note = await self._localize(job)
            except ImportError:
                job.error = ProviderError(
                    f"the {job.provider} adapter is not installed in this sender",
                    failure=Failure.PERMANENT,
                    code="adapter_missing",
                )
            except ProviderError as exc:
                job.error = exc
            if job.error is None:
                if not await self._wait_for_slot(job):
                    self._released.append(job)  # the drain handed it back: no provider call
                    return
                REQUEST_TO_PROVIDER.observe(max(0.0, (utcnow() - job.created_at).total_seconds()))
                try:
                    assert provider is not None
                    call = provider.send(job.channel, job.outbound)
                    sent = await (self._traced_call(job, call) if tracing.enabled() else call)
                    job.result = templates.noted(sent, note)
                    job.answered_at = utcnow()
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

    async def _wait_for_slot(self, job: Job) -> bool:
        """Wait until the job's slot; False if the drain took it back meanwhile.

        The provider counts the requests that reach it within any one second, so what must keep
        the rate is when a call starts, not when its slot was: a call that starts late (a busy
        event loop, a slow claim) beside successors that start on time puts more than the rate
        into one second. So a job that would start more than ``pacing_late_seconds`` after its
        slot takes a fresh slot of the channel (after every slot already reserved, by any
        process) instead. Slots are 1/rate apart at a rate ``pacing_margin`` under the limit,
        which leaves room for that lateness and for the network's jitter."""
        late_ok = self.settings.pacing_late_seconds
        for fresh in range(MAX_FRESH_SLOTS + 1):
            delay = job.slot - time.time()
            if delay > 0:
                if fresh == 0:
                    RATE_WAITS.labels(str(job.channel.id), "throughput").inc()
                if self.runtime.stopping.is_set():
                    return False
                self._waiting[job.id] = asyncio.current_task()  # type: ignore[assignment]
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    if not self.runtime.stopping.is_set():
                        raise
                    return False  # drain() cancelled the wait
                finally:
                    self._waiting.pop(job.id, None)
            if job.rate <= 0 or time.time() - job.slot <= late_ok or fresh == MAX_FRESH_SLOTS:
                return True
            RATE_WAITS.labels(str(job.channel.id), "late").inc()
            try:
                async with self.runtime.engine.begin() as conn:
                    at = await repo.take_slot(conn, job.channel.id, utcnow(), 1 / job.rate)
            except Exception as exc:  # the database is away: send now rather than hold the claim
                log.warning("could not take a fresh slot; sending late", error=repr(exc)[:200])
                return True
            job.slot = at.timestamp()
        return True

    async def _localize(self, job: Job) -> str | None:
        """A channel without Meta templates gets a catalogue template rendered as text; the
        note says so in the message's history."""
        content = job.outbound.content
        if job.provider == "meta" or not isinstance(content, TemplateContent):
            return None
        try:
            rendered = await templates.as_text(self.sender, job.tenant_id, content)
        except Exception as exc:
            raise ProviderError(
                f"could not read the template catalogue: {type(exc).__name__}",
                failure=Failure.RETRY,
                code="database",
            ) from exc
        if rendered is None:
            return None
        job.outbound = replace(job.outbound, content=rendered[0])
        return rendered[1]

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
        by the next process (see services.sender.reconcile)."""
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
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            ids = list(self._in_flight_ids)
            if not ids:
                continue
            try:
                async with self.runtime.engine.begin() as conn:
                    await repo.renew_leases(conn, ids, utcnow())
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("lease renewal failed", error=repr(exc)[:200], in_flight=len(ids))
            late = time.monotonic() - due
            LEASE_RENEWAL_SECONDS.observe(max(0.0, late))
            if late > interval:
                log.warning("lease renewal late", seconds_late=round(late, 3), in_flight=len(ids))

    @property
    def live(self) -> set[uuid.UUID]:
        """The messages this process has claimed and not yet recorded (the sweeper's exclusion)."""
        return self._in_flight_ids

    async def release(self, jobs: Sequence[Job]) -> None:
        """Hand claimed jobs that never reached the provider back to the queue."""
        reason = "sender stopping: released before the provider call"
        now = utcnow()
        async with self.runtime.uow() as uow:
            rows = await repo.still_sending(uow.conn, [j.id for j in jobs])
            await status.record(
                uow,
                [
                    status.Change(
                        r._mapping,
                        "queued",
                        "sending",
                        reason,
                        error_code=r.error_code,
                        values={"sending_started_at": None, "attempts": r.attempts - 1, "not_before": now},
                    )
                    for r in rows
                ],
            )
            await uow.commit()
        log.info("released claimed messages on shutdown", count=len(rows))

    async def record(self, done: Sequence[Job]) -> None:
        sent = [j for j in done if j.error is None]
        failed = [j for j in done if j.error is not None]
        async with self.runtime.uow() as uow:
            await status.record(
                uow,
                [
                    status.Change(
                        j.message,
                        "sent",
                        "sending",
                        j.result.history_note,  # type: ignore[union-attr]
                        provider_message_id=j.result.provider_message_id,  # type: ignore[union-attr]
                        row_reason=j.result.history_note or j.note,  # type: ignore[union-attr]
                        values={"sending_started_at": None},
                    )
                    for j in sent
                ],
            )
            # the pair interval as the provider sees it: from the answer to the previous message
            # (its arrival was before that), not from its slot
            pairs: dict[uuid.UUID, dict[str, datetime]] = {}
            for j in sent:
                if j.pair_interval > 0 and j.answered_at is not None:
                    pairs.setdefault(j.channel.id, {})[j.recipient_hash] = j.answered_at + timedelta(
                        seconds=j.pair_interval
                    )
            for channel_id, next_at in sorted(pairs.items()):
                await repo.push_pair_next(uow.conn, channel_id, next_at)
            for channel_id in sorted({j.channel.id for j in sent}):
                if await repo.close_breaker(uow.conn, channel_id):
                    log.info("channel breaker closed", channel_id=str(channel_id))
                BREAKER.labels(str(channel_id)).set(0)
            for j in failed:
                await self._record_failure(uow, j)
            if failed:
                await repo.notify_due(uow.conn)  # a retry is due soon: the claim loops recompute their sleep
            await uow.commit()
        self._in_flight_ids.difference_update(j.id for j in done)
        if sent:
            await self._apply_pending([j.result.provider_message_id for j in sent])  # type: ignore[union-attr]

    async def _record_failure(self, uow: UnitOfWork, job: Job) -> None:
        s = self.settings
        conn = uow.conn
        exc = job.error
        assert exc is not None
        current = await repo.lock_message(conn, job.id)
        if current is None or current.status != "sending":
            return
        now = utcnow()
        if isinstance(exc, SessionDown):  # not the message's fault: back to the queue, channel paused
            await sessions.requeue_refused(self.sender, uow, job, current, exc)
            return
        code = exc.code or exc.failure.value
        pair_wait = None
        if exc.retryable and job.pair_interval > 0:
            next_at = await repo.pair_next_at(conn, job.channel.id, current.recipient_hash)
            if next_at is not None:
                pair_wait = (next_at - now).total_seconds()
        outcome = domain.after_failure(
            exc.failure,
            code=code,
            reason=f"{job.provider}: {exc.reason}",
            attempts=job.attempts,
            max_attempts=s.max_attempts,
            backoff=domain.backoff_seconds(
                job.attempts, base=s.backoff_base_seconds, cap=s.backoff_cap_seconds
            ),
            retry_after=exc.retry_after,
            pair_interval=job.pair_interval,
            pair_wait=pair_wait,
            provider=job.provider,
            is_template=isinstance(job.outbound.content, TemplateContent),
            ambiguous_attempts=current.ambiguous_attempts + 1 if exc.ambiguous else 0,
            max_ambiguous_resends=s.max_ambiguous_resends,
        )
        d = outcome.decision
        label = str(job.channel.id)
        ambiguous = {"ambiguous_attempts": current.ambiguous_attempts + 1} if exc.ambiguous else {}
        if exc.ambiguous:
            AMBIGUOUS.labels(
                label, job.provider, "resent" if isinstance(d, domain.Retry) else "gave_up"
            ).inc()
        if isinstance(d, domain.Retry):
            until = now + timedelta(seconds=d.delay)
            change = status.Change(
                current._mapping,
                "queued",
                "sending",
                d.note,
                error_code=code,
                values={
                    "sending_started_at": None,
                    "not_before": until,
                    "wait_reason": domain.retry_wait_reason(exc.failure),
                    "wait_until": until,
                    **ambiguous,
                },
                traceparent=job.send_traceparent,
            )
        else:
            change = status.Change(
                current._mapping,
                "failed",
                "sending",
                d.reason,
                error_code=code,
                dead_letter=d.dead_letter,
                values={"sending_started_at": None, **ambiguous},
                traceparent=job.send_traceparent,
            )
            if d.dead_letter:
                DEAD_LETTERS.labels(label).inc()
        await status.record(uow, [change])
        if outcome.record_opt_out:
            await record_opt_out(
                self.sender, conn, job.tenant_id, job.outbound.to, f"{job.provider} error {code}", now
            )
        if outcome.template_status is not None:
            # Meta's refusal says what its webhook may not have told us (yet): the next messages
            # with this template fail without a call, as if template.status_changed had arrived
            content = job.outbound.content
            assert isinstance(content, TemplateContent)
            await record_template_status(
                conn,
                job.tenant_id,
                content.name,
                content.language,
                outcome.template_status,
                change.reason,
                now,
            )
        if outcome.pause_channel:
            await repo.update_channel(
                conn,
                job.channel.id,
                paused=True,
                pause_reason=f"{change.reason} (error {code}); PATCH the channel to resume",
                updated_at=now,
            )
            BREAKER.labels(label).set(3)
            log.warning("channel paused", channel_id=label, code=code)
        if outcome.counts_against_channel:
            await self._count_channel_failure(uow, job, now)
        if outcome.slow_channel:
            # the provider counted more than the channel's rate within its window: no new slot
            # for this channel until that window has passed (a burst of 130429 moves it once)
            await repo.push_next_slot(conn, job.channel.id, now + THROTTLE_WINDOW)
            RATE_WAITS.labels(label, "provider_throttle").inc()

    async def _count_channel_failure(self, uow: UnitOfWork, job: Job, now: datetime) -> None:
        s = self.settings
        failures = await repo.count_channel_failure(uow.conn, job.channel.id)
        if failures is not None and domain.breaker_opens(failures, s.breaker_threshold):
            await repo.update_channel(
                uow.conn,
                job.channel.id,
                breaker_open_until=now + timedelta(seconds=s.breaker_cooldown_seconds),
            )
            BREAKER.labels(str(job.channel.id)).set(1)
            log.warning(
                "channel breaker open",
                channel_id=str(job.channel.id),
                failures=failures,
                cooldown=s.breaker_cooldown_seconds,
            )

    async def _apply_pending(self, provider_message_ids: list[str]) -> None:
        """Apply delivery statuses that arrived before the send was recorded."""
        async with self.runtime.engine.connect() as conn:
            early = await repo.pending_for(conn, provider_message_ids)
        for p in early:
            await apply_delivery_status(
                self.sender, p.provider_message_id, p.status, p.at, p.error_code, p.reason, pending_id=p.id
            )
