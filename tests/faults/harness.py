"""The fault suite's system: Herald as it runs in production, with replicas, under a mixed load.

``Fleet`` starts 2× ingest, 2× pipeline, 2× sender and 1× scheduler as real processes (``herald run``,
each replica on its own port) against the session's RabbitMQ and PostgreSQL, and a fake Meta Cloud
API (in a thread of the test process) that records every arrival and can be made unreliable (a share
of 5xx/429 and of answers that come after the sender's timeout) or be down. The console is not
started: it holds no work.

``Load`` is one tenant's traffic, sent from a background thread while a fault is injected: signed
Meta webhooks (inbound texts, which also open the recipients' 24-hour windows), order events posted
to ingest's ``/v1/events`` (a notification rule turns them into messages), ``message.requested``
published on the broker by "another system", and one-off and recurring scheduled messages due during
the run. Every item carries a unique token in its text, and only what Herald accepted (a 2xx, or a
publisher confirm) is counted, so that ``outcome`` can tell, item by item, where each one ended:

- delivered (``sent``/``delivered``/``read`` in the sender), dead-lettered or failed with a reason,
  or still intermediate (``queued``/``sending``: stuck if it stays so) or absent (lost);
- duplicates: arrivals at the fake Meta beyond the copies expected for that token.

The documented crash window (services/sender/README.md, "Crash rule" and "Lost answers"): a message
at the provider when its sender died (or could not record the answer: database gone) is resent after
its lease (Meta keeps no client reference to look it up), and a call whose answer was lost is resent
at most ``SENDER_MAX_AMBIGUOUS_RESENDS`` (1) times. So duplicates ≤ messages in ``sending`` when the
fault struck + the ambiguous resends the sender counted (``messages.ambiguous_attempts``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from devtools.database import asyncpg_dsn
from devtools.fake_llm import FakeChatModel
from devtools.fake_providers.meta import FakeMeta
from devtools.processes import ServiceProcess, free_port, herald_cli, wait_for
from tests.conftest import Infra

TOKEN = "faults-meta-token"
APP_SECRET = "faults-app-secret"
FINAL = {"sent", "delivered", "read", "failed"}
DELIVERED = {"sent", "delivered", "read"}
NOTE = "Our new menu has a vegan feijoada that sold out on Friday"
REPLICAS = {"ingest": 2, "pipeline": 2, "sender": 2, "scheduler": 1}

SERVICE_ENV = {
    # The lease must outlast any stall of a live sender, or another replica's sweeper resends what
    # the stalled one has at the provider (services/sender/README.md, "Crash rule"). With 3 s, the
    # run of 2026-12-06 had every process pause 4-5 s when RabbitMQ came back after its 30 s stop
    # (2 shared cores); sender-1's renewal came 4.7 s late and sender-0's sweeper resent the 57
    # messages sender-1 had live: 57 duplicates. 10 s keeps a SIGKILL's recovery short.
    "SENDER_SENDING_LEASE_SECONDS": "10",
    "SENDER_HTTP_TIMEOUT_SECONDS": "2",
    "SENDER_MAX_ATTEMPTS": "8",
    "SENDER_BACKOFF_BASE_SECONDS": "0.2",
    "SENDER_BACKOFF_CAP_SECONDS": "2",
    "SENDER_BREAKER_COOLDOWN_SECONDS": "2",
    "SENDER_CLAIM_HORIZON_SECONDS": "0.2",
    "HERALD_GRACEFUL_TIMEOUT_SECONDS": "5",
    # the content jobs' writer and editor ask the model stand-in; the order parser stays rule-based
    "PIPELINE_LLM_MODEL": "local-7b",
    "PIPELINE_LLM_MODEL_ORDER_PARSER": "offline",
    "PIPELINE_LLM_MAX_ATTEMPTS": "3",
    "PIPELINE_LLM_BACKOFF_SECONDS": "0.2",
    "PIPELINE_LLM_TIMEOUT_SECONDS": "2",
}


class ModelThread:
    """``FakeChatModel`` on its own event loop in a thread; ``mode`` switches every answer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeChatModel(slow_seconds=4.0)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ModelThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(15)
        return self

    def mode(self, mode: str) -> None:
        self.loop.call_soon_threadsafe(setattr, self.fake, "default", mode)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class MetaThread:
    """``FakeMeta`` on its own event loop in a thread, on a fixed port so that it can go down and
    come back where the channel points."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.fake = FakeMeta(token=TOKEN, port=self.port)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.up = False

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def start(self) -> MetaThread:
        self._thread.start()
        self.come_back()
        return self

    def go_down(self) -> None:
        """Connections refused: the server is gone (what it recorded stays)."""
        self._run(self.fake.stop())
        self.up = False

    def come_back(self) -> None:
        received = self.fake.state
        self.fake = FakeMeta(token=TOKEN, port=self.port)
        self.fake.state = received
        self._run(self.fake.start())
        self.up = True

    def chaos(self, error_rate: float = 0.0, timeout_rate: float = 0.0, timeout_seconds: float = 4.0) -> None:
        def apply() -> None:
            state = self.fake.state
            state.error_rate, state.timeout_rate, state.timeout_seconds = (
                error_rate,
                timeout_rate,
                timeout_seconds,
            )

        self.loop.call_soon_threadsafe(apply)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def texts_for(self, phone_number_id: str) -> Counter[str]:
        return Counter(
            (r["body"].get("text") or {}).get("body", "")
            for r in list(self.fake.state.received)
            if r["phone_number_id"] == phone_number_id
        )

    def stop(self) -> None:
        if self.up:
            self._run(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class Fleet:
    infra: Infra
    tmp: Path
    meta: MetaThread = field(default_factory=MetaThread)
    model: ModelThread = field(default_factory=ModelThread)
    replicas: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Fleet:
        self.meta.start()
        self.model.start()
        ports = {name: [free_port() for _ in range(n)] for name, n in REPLICAS.items()}
        sender = f"http://127.0.0.1:{ports['sender'][0]}"
        self.env = self.infra.service_env(
            **SERVICE_ENV,
            INGEST_SENDER_URL=sender,
            INGEST_PIPELINE_URL=f"http://127.0.0.1:{ports['pipeline'][0]}",
            PIPELINE_SENDER_URL=sender,
            PIPELINE_LLM_BASE_URL=self.model.fake.base_url,
        )
        for name, plist in ports.items():
            self.replicas[name] = [
                ServiceProcess(name, port, self.env, self.tmp / f"{name}-{i}.log")
                for i, port in enumerate(plist)
            ]
        for proc in self.processes:
            proc.start()
        for proc in self.processes:
            proc.wait_ready(120)
        return self

    @property
    def processes(self) -> list[ServiceProcess]:
        return [p for plist in self.replicas.values() for p in plist]

    def label(self, proc: ServiceProcess) -> str:
        return f"{proc.name}-{self.replicas[proc.name].index(proc)}"

    def all_ready(self) -> bool:
        return all(p.proc is not None and p.proc.poll() is None and p.readyz() == 200 for p in self.processes)

    def restart_dead(self) -> None:
        """What a supervisor does: start again every replica that is not running."""
        for proc in self.processes:
            if proc.proc is None or proc.proc.poll() is not None:
                proc.start()

    def stop(self) -> None:
        for proc in self.processes:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.terminate(15)
        self.meta.stop()
        self.model.stop()

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(asyncpg_dsn(self.infra.database_url), timeout=5)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return asyncio.run(go())


@dataclass
class Accepted:
    """What Herald took responsibility for: token → copies expected at the provider."""

    messages: dict[str, int] = field(default_factory=dict)
    webhooks: list[str] = field(default_factory=list)
    #: writers (users) whose order ("write me a LinkedIn post about …") ingest accepted
    drafts: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, token: str, copies: int = 1) -> None:
        with self.lock:
            self.messages[token] = copies

    @property
    def total(self) -> int:
        return len(self.messages) + len(self.webhooks) + len(self.drafts)


class Load:
    """One tenant's mixed traffic through the fleet (a new tenant per fault, so counts are its own)."""

    RULE_TEXT = "Order {{ order_id }} is now {{ status | humanize }}"

    def __init__(
        self, fleet: Fleet, label: str, *, items: int, recipients: int = 20, recurring_count: int = 1
    ) -> None:
        self.fleet = fleet
        self.run = f"{label}-{uuid.uuid4().hex[:6]}"
        self.recurring_count = recurring_count
        data = json.loads(herald_cli(fleet.env, "tenant", "create", self.run, "--json"))
        self.tenant_id, self.key = data["tenant_id"], data["api_key"]
        self.accepted = Accepted()
        self.phones = [
            f"+55119{70_000_000 + i * 7919 + hash(self.run) % 1000:08d}" for i in range(recipients)
        ]
        self.pnid = uuid.uuid4().hex[:15]
        sender = self.client("sender")
        channel = sender.post(
            "/v1/channels",
            json={
                "name": "meta (faults)",
                "provider": "meta",
                "base_url": fleet.meta.url,
                "settings": {"phone_number_id": self.pnid},
                "credentials": {"access_token": TOKEN},
                "throughput_per_second": 1000,
                "pair_interval_seconds": 0,
                "is_default": True,
            },
        )
        assert channel.status_code == 201, channel.text
        source = self.client("ingest").post(
            "/v1/webhook-sources",
            json={"provider": "meta", "secrets": {"app_secret": APP_SECRET, "verify_token": "v"}},
        )
        assert source.status_code == 201, source.text
        self.webhook_path = source.json()["url"]
        rule = self.client("pipeline").post(
            "/v1/rules",
            json={
                "name": "orders",
                "event_type": "order.status_changed",
                "recipient": "customer_phone",
                "messages": {"en": {"text": self.RULE_TEXT}},
                "fallback_language": "en",
                "priority": 9,
            },
        )
        assert rule.status_code == 201, rule.text
        # one writer (a mapped user with a profile) per content order of the load
        self.writers = [f"writer-{i}" for i in range(0, items, 12)]
        self.writer_phones = {
            w: f"+55119{60_000_000 + n * 104_729 + hash(self.run) % 1000:08d}"
            for n, w in enumerate(self.writers)
        }
        ingest, pipeline = self.client("ingest"), self.client("pipeline")
        for writer, phone in self.writer_phones.items():
            assert ingest.put(f"/v1/contacts/{phone}", json={"user_id": writer}).status_code == 200
            profile = {"phone": phone, "notify_on_ready": True, "platforms": ["linkedin"], "topics": []}
            r = pipeline.put(f"/v1/profiles/{writer}", json=profile)
            assert r.status_code == 200, r.text
        # every recipient writes first: the inbound webhooks open their 24-hour windows
        with httpx.Client(timeout=10) as http:
            for phone in self.phones:
                assert self.webhook(http, phone, f"hello from {phone[-4:]}", replica=0) is not None
            for phone in self.writer_phones.values():  # a note for each writer's post to cite
                assert self.webhook(http, phone, NOTE, replica=1) is not None
        wait_for(
            lambda: self.windows_open() >= len(self.phones) + len(self.writers),
            60,
            "the recipients' 24-hour windows to open",
        )
        wait_for(
            lambda: (
                self.fleet.sql(
                    "SELECT count(*) AS n FROM pipeline.notes WHERE tenant_id = $1 AND user_id IS NOT NULL",
                    uuid.UUID(self.tenant_id),
                )[0]["n"]
                >= len(self.writers)
            ),
            60,
            "the writers' notes in the pipeline",
        )

    def client(self, service: str, replica: int = 0) -> httpx.Client:
        return httpx.Client(
            base_url=self.fleet.replicas[service][replica].url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
        )

    def windows_open(self) -> int:
        rows = self.fleet.sql(
            "SELECT count(*) AS n FROM sender.windows WHERE tenant_id = $1", uuid.UUID(self.tenant_id)
        )
        return rows[0]["n"]

    # -- the four kinds of items ------------------------------------------------------------------

    def webhook(self, http: httpx.Client, phone: str, text: str, replica: int) -> str | None:
        wamid = f"wamid.{uuid.uuid4().hex}"
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": phone.lstrip("+")}],
            "messages": [
                {
                    "from": phone.lstrip("+"),
                    "id": wamid,
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
            }
        ).encode()
        signature = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        url = self.fleet.replicas["ingest"][replica].url + self.webhook_path
        try:
            r = http.post(url, content=body, headers={"X-Hub-Signature-256": f"sha256={signature}"})
        except httpx.HTTPError:
            return None
        return wamid if r.status_code == 200 else None

    def order(self, http: httpx.Client, token: str, phone: str, replica: int) -> bool:
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/shop/orders",
            "type": "order.status_changed",
            "time": datetime.now(UTC).isoformat(),
            "data": {"order_id": token, "status": "preparing", "customer_phone": phone},
        }
        url = self.fleet.replicas["ingest"][replica].url + "/v1/events"
        try:
            r = http.post(url, json=event, headers={"Authorization": f"Bearer {self.key}"})
        except httpx.HTTPError:
            return False
        return r.status_code == 202

    def scheduled(self, http: httpx.Client, token: str, phone: str, recurring: bool) -> bool:
        at = datetime.now(UTC) + timedelta(seconds=3)
        body: dict[str, Any] = {"to": phone, "text": token}
        if recurring:
            body["recurrence"] = {
                "timezone": "UTC",
                "start": at.replace(tzinfo=None, microsecond=0).isoformat(),
                "rrule": f"FREQ=MINUTELY;COUNT={self.recurring_count}",
            }
        else:
            body["send_at"] = at.isoformat()
        url = self.fleet.replicas["scheduler"][0].url + "/v1/scheduled-messages"
        try:
            r = http.post(url, json=body, headers={"Authorization": f"Bearer {self.key}"})
        except httpx.HTTPError:
            return False
        return r.status_code == 201

    async def _publish(self, channel: aio_pika.abc.AbstractChannel, token: str, phone: str) -> None:
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/tests/faults",
            "type": "message.requested.v1",
            "time": datetime.now(UTC).isoformat(),
            "tenantid": self.tenant_id,
            "data": {"message_id": str(uuid.uuid4()), "to": phone, "text": token, "origin": "test"},
        }
        exchange = await channel.get_exchange("herald.events")
        await exchange.publish(
            aio_pika.Message(
                json.dumps(event).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                priority=5,
            ),
            routing_key="message.requested.v1",
            timeout=5,
        )

    def generate(self, items: int, rate: float, stop: threading.Event) -> None:
        """Send ``items`` items at about ``rate`` a second, round-robin over the kinds and the
        replicas; what Herald refuses (it is down, or answers 503) is counted, not retried."""
        asyncio.run(self._generate(items, rate, stop))

    async def _generate(self, items: int, rate: float, stop: threading.Event) -> None:
        connection: aio_pika.abc.AbstractRobustConnection | None = None
        channel: aio_pika.abc.AbstractChannel | None = None
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        with httpx.Client(timeout=5) as http:
            for i in range(items):
                if stop.is_set():
                    break
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                phone = self.phones[i % len(self.phones)]
                token = f"{self.run}:{i}"
                kind = ("direct", "order", "webhook", "direct", "order", "scheduled")[i % 6]
                replica = (i // 6) % 2
                if kind == "scheduled" and i % 36 == 5:
                    kind = "recurring"
                if i % 12 == 0:
                    kind = "draft"
                if kind == "direct":
                    try:
                        if connection is None or connection.is_closed:
                            connection = await aio_pika.connect(self.fleet.infra.amqp_url, timeout=3)
                            channel = await connection.channel(publisher_confirms=True)
                        assert channel is not None
                        await self._publish(channel, token, phone)
                    except Exception:  # the broker is away: nothing was accepted
                        self.accepted.refused[kind] += 1
                        if connection is not None:
                            try:
                                await connection.close()
                            except Exception:
                                pass
                        connection = None
                        continue
                    self.accepted.expect(token)
                elif kind == "order":
                    ok = await loop.run_in_executor(None, self.order, http, token, phone, replica)
                    self.accepted.expect(token) if ok else self.accepted.refused.update([kind])
                elif kind == "draft":
                    writer = f"writer-{i}"
                    text = "write me a LinkedIn post about our new menu"
                    wamid = await loop.run_in_executor(
                        None, self.webhook, http, self.writer_phones[writer], text, replica
                    )
                    self.accepted.drafts.append(writer) if wamid else self.accepted.refused.update([kind])
                elif kind == "webhook":
                    wamid = await loop.run_in_executor(
                        None, self.webhook, http, phone, f"note {token}", replica
                    )
                    self.accepted.webhooks.append(wamid) if wamid else self.accepted.refused.update([kind])
                else:
                    ok = await loop.run_in_executor(
                        None, self.scheduled, http, token, phone, kind == "recurring"
                    )
                    if ok:
                        self.accepted.expect(token, self.recurring_count if kind == "recurring" else 1)
                    else:
                        self.accepted.refused[kind] += 1
        if connection is not None:
            await connection.close()

    # -- where everything ended -------------------------------------------------------------------

    def messages(self) -> list[asyncpg.Record]:
        return self.fleet.sql(
            "SELECT text, status, dead_letter, error_code, ambiguous_attempts FROM sender.messages"
            " WHERE tenant_id = $1",
            uuid.UUID(self.tenant_id),
        )

    def sending(self) -> int:
        rows = self.fleet.sql(
            "SELECT count(*) AS n FROM sender.messages WHERE tenant_id = $1 AND status = 'sending'",
            uuid.UUID(self.tenant_id),
        )
        return rows[0]["n"]

    def webhooks_stored(self) -> set[str]:
        rows = self.fleet.sql(
            "SELECT dedupe_key FROM ingest.webhook_keys WHERE tenant_id = $1 AND provider = 'meta'",
            uuid.UUID(self.tenant_id),
        )
        return {r["dedupe_key"] for r in rows}

    def unpublished(self) -> int:
        """Outbox rows of every service not yet on the broker (an event stuck before it left)."""
        return sum(
            self.fleet.sql(f"SELECT count(*) AS n FROM {schema}.outbox WHERE published_at IS NULL")[0]["n"]
            for schema in ("ingest", "scheduler", "pipeline", "sender")
        )

    def outcome(self) -> Outcome:
        token_re = re.compile(re.escape(self.run) + r":\d+")
        by_token: dict[str, list[asyncpg.Record]] = {}
        for row in self.messages():
            match = token_re.search(row["text"] or "")
            if match:
                by_token.setdefault(match.group(), []).append(row)
        with self.accepted.lock:
            expected = dict(self.accepted.messages)
            wamids = list(self.accepted.webhooks)
        out = Outcome(accepted=self.accepted.total)
        for token, copies in expected.items():
            found = by_token.get(token, [])
            if len(found) < copies:
                out.lost.append(token)
            for row in found:
                if row["status"] in DELIVERED:
                    out.delivered += 1
                elif row["status"] in FINAL:
                    out.dead_lettered += 1
                    out.reasons[row["error_code"] or "?"] += 1
                else:
                    out.stuck.append(f"{token}={row['status']}")
            out.ambiguous += sum(r["ambiguous_attempts"] for r in found)
        arrivals: Counter[str] = Counter()
        for text, n in self.fleet.meta.texts_for(self.pnid).items():
            match = token_re.search(text)
            if match:
                arrivals[match.group()] += n
        for token, n in arrivals.items():
            extra = n - expected.get(token, 0)
            if extra > 0:
                out.duplicates += extra
                out.duplicated.append(token)
        stored = "\n".join(self.webhooks_stored())  # a key names the fact (its kind + the wamid)
        out.lost.extend(w for w in wamids if w not in stored)
        out.delivered += sum(1 for w in wamids if w in stored)
        by_writer: dict[str, list[str]] = {}
        for draft in self.client("pipeline").get("/v1/drafts", params={"limit": 500}).json():
            by_writer.setdefault(draft["user_id"], []).append(draft["status"])
        with self.accepted.lock:
            writers = list(self.accepted.drafts)
        for writer in writers:
            found = by_writer.get(writer, [])
            if not found:
                out.lost.append(f"draft of {writer}")
            for status in found:
                if status == "ready":
                    out.delivered += 1
                elif status == "failed":
                    out.dead_lettered += 1
                    out.reasons["draft failed"] += 1
                else:
                    out.stuck.append(f"draft of {writer}={status}")
        out.unpublished = self.unpublished()
        return out


@dataclass
class Outcome:
    accepted: int
    delivered: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    ambiguous: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    unpublished: int = 0

    def settled(self) -> bool:
        return not self.lost and not self.stuck and not self.unpublished


@dataclass
class Row:
    fault: str
    accepted: int
    refused: int
    delivered: int
    dead_lettered: int
    duplicates: int
    window: int
    lost: int
    stuck: int
    recover_s: float
    settle_s: float
    note: str = ""


@dataclass
class Fault:
    """One fault: ``inject`` strikes (returns the crash window it opened: messages in ``sending``
    at that moment, for faults that can strand a call), ``recover`` undoes it the way a supervisor or
    an operator would; ``hold`` seconds pass between the two while load keeps flowing."""

    name: str
    inject: Callable[[Fleet], None]
    recover: Callable[[Fleet], None]
    hold: float = 0.0
    opens_crash_window: bool = False


def run_fault(
    fleet: Fleet, fault: Fault, *, items: int, rate: float, settle_timeout: float = 240.0
) -> tuple[Row, Outcome, Load]:
    """Load flowing, the fault struck a third of the way in, held, undone; then wait (with a
    deadline) for every accepted item to reach its end and every process to be ready."""
    load = Load(fleet, fault.name.split(" ")[0].replace("/", "-"), items=items)
    stop = threading.Event()
    generator = threading.Thread(target=load.generate, args=(items, rate, stop), daemon=True)
    generator.start()
    wait_for(lambda: load.accepted.total >= items // 3 or not generator.is_alive(), 60, "a third of the load")
    window = load.sending() if fault.opens_crash_window else 0
    fault.inject(fleet)
    if fault.hold:
        time.sleep(fault.hold)  # the outage's length is the fault itself, not a wait for a condition
    recovered_at = time.monotonic()
    fault.recover(fleet)
    fleet.restart_dead()
    wait_for(fleet.all_ready, 120, f"every process ready again after {fault.name}")
    recover_s = time.monotonic() - recovered_at
    generator.join(items / rate + 120)
    stop.set()
    assert not generator.is_alive(), "the load generator did not finish"

    last: list[Outcome] = []

    def settled() -> bool:
        out = load.outcome()
        last[:] = [out]
        return out.settled()

    deadline = time.monotonic() + settle_timeout
    while time.monotonic() < deadline and not settled():
        time.sleep(0.5)
    settle_s = time.monotonic() - recovered_at
    out = last[0]
    row = Row(
        fault=fault.name,
        accepted=out.accepted,
        refused=sum(load.accepted.refused.values()),
        delivered=out.delivered,
        dead_lettered=out.dead_lettered,
        duplicates=out.duplicates,
        window=window + out.ambiguous,
        lost=len(out.lost),
        stuck=len(out.stuck) + out.unpublished,
        recover_s=recover_s,
        settle_s=settle_s,
        note=", ".join(f"{k}×{v}" for k, v in out.reasons.items()),
    )
    return row, out, load


def table(rows: list[Row]) -> str:
    head = (
        "| fault | accepted | refused | delivered | dead-lettered | duplicates (window) | lost | stuck "
        "| ready again (s) | all final (s) | dead-letter reasons |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    return head + "".join(
        f"| {r.fault} | {r.accepted} | {r.refused} | {r.delivered} | {r.dead_lettered} | {r.duplicates} ({r.window}) "
        f"| {r.lost} | {r.stuck} | {r.recover_s:.1f} | {r.settle_s:.1f} | {r.note} |\n"
        for r in rows
    )


# -- the faults ---------------------------------------------------------------------------------


def kill(service: str, *replicas: int) -> Callable[[Fleet], None]:
    def go(fleet: Fleet) -> None:
        for i in replicas:
            fleet.replicas[service][i].kill()

    return go


def nothing(_: Fleet) -> None:
    return None


def broker(action: str) -> Callable[[Fleet], None]:
    def go(fleet: Fleet) -> None:
        handle = fleet.infra.handle
        assert handle is not None
        getattr(handle, action)()

    return go


def restart(stop: str, start: str) -> Callable[[Fleet], None]:
    def go(fleet: Fleet) -> None:
        handle = fleet.infra.handle
        assert handle is not None
        getattr(handle, stop)()
        getattr(handle, start)()

    return go


def provider_chaos(error_rate: float, timeout_rate: float) -> Callable[[Fleet], None]:
    return lambda fleet: fleet.meta.chaos(error_rate, timeout_rate)


def provider_calm(fleet: Fleet) -> None:
    fleet.meta.chaos(0.0, 0.0)


def provider_down(fleet: Fleet) -> None:
    fleet.meta.go_down()


def provider_up(fleet: Fleet) -> None:
    fleet.meta.come_back()


def model(mode: str) -> Callable[[Fleet], None]:
    return lambda fleet: fleet.model.mode(mode)


def sigkills() -> list[Fault]:
    faults = []
    for service, n in REPLICAS.items():
        sender = service == "sender"  # only a sender holds provider calls a kill can strand
        for i in range(n):
            faults.append(
                Fault(f"SIGKILL {service}-{i}", kill(service, i), nothing, opens_crash_window=sender)
            )
        if n > 1:
            both = tuple(range(n))
            faults.append(
                Fault(f"SIGKILL both {service}", kill(service, *both), nothing, opens_crash_window=sender)
            )
    return faults


def all_faults(outage: float = 30.0, provider_hold: float = 20.0) -> list[Fault]:
    return [
        *sigkills(),
        Fault("RabbitMQ restart", restart("stop_broker", "start_broker"), nothing, opens_crash_window=True),
        Fault(f"RabbitMQ stop {outage:.0f} s", broker("stop_broker"), broker("start_broker"), outage, True),
        Fault(
            "PostgreSQL restart", restart("stop_database", "start_database"), nothing, opens_crash_window=True
        ),
        Fault(
            f"PostgreSQL stop {outage:.0f} s", broker("stop_database"), broker("start_database"), outage, True
        ),
        Fault("provider 30% 5xx/429 + 5% timeouts", provider_chaos(0.3, 0.05), provider_calm, provider_hold),
        Fault(f"provider down {provider_hold:.0f} s", provider_down, provider_up, provider_hold, True),
        Fault(f"model slow {provider_hold:.0f} s", model("slow"), model("ok"), provider_hold),
        Fault(f"model failing (500) {provider_hold:.0f} s", model("500"), model("ok"), provider_hold),
        Fault(f"model malformed JSON {provider_hold:.0f} s", model("malformed"), model("ok"), provider_hold),
    ]


def write_table(rows: list[Row], path: Path, title: str, config: Any = None) -> str:
    """Write the table to ``path`` and, given pytest's config, print it past the output capture."""
    text = f"## {title}\n\n{table(rows)}\n(written to {path})\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if config is not None:
        capture = config.pluginmanager.get_plugin("capturemanager")
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if capture is not None and reporter is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("\n" + text)
    return text


def fleet_fixture(infra: Infra, tmp: Path) -> Iterator[Fleet]:
    """A fresh database for the fleet (its processes work on everything it holds), queues purged."""
    from devtools.database import create_migrated_database, drop_database
    from tests.e2e.conftest import purge_service_queues

    name, url = create_migrated_database(infra.database_url, "herald_faults")
    asyncio.run(purge_service_queues(infra.amqp_url))
    fleet = Fleet(Infra(database_url=url, amqp_url=infra.amqp_url, handle=infra.handle), tmp)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        drop_database(infra.database_url, name)


def check(row: Row, out: Outcome) -> None:
    """What the issue asks of every fault, with the items that broke it named."""
    assert not out.lost, f"{row.fault}: {len(out.lost)} accepted items lost, e.g. {out.lost[:5]}"
    assert not out.stuck, f"{row.fault}: items stuck in an intermediate state: {out.stuck[:10]}"
    assert not out.unpublished, f"{row.fault}: {out.unpublished} outbox rows never published"
    assert row.duplicates <= row.window, (
        f"{row.fault}: {row.duplicates} duplicates at the provider, more than the crash window "
        f"({row.window}): {out.duplicated[:10]}"
    )
