"""Receiving a provider webhook: verify, normalise, store durably, answer.

The hot path makes one database round trip per webhook: a single SQL statement (implicitly one
transaction) stores the raw body and headers, claims each fact's dedupe key, writes the events
of new facts to the outbox (or, for media, to ``media_jobs``), records newly seen contacts and
notifies the relay. The endpoint answers 200 only after that statement has committed. There is no NOTIFY in it:
NOTIFY serialises committing transactions on a global lock, which halves throughput under
load; the relay and the media worker of this process are woken directly after the commit, and
those of other replicas find the rows at their next poll.

Invariants:
- nothing is stored for a request that fails verification (only a per-day count);
- a fact (message, status…) whose dedupe key exists is not published again; a webhook whose
  every fact is a duplicate is recorded as ``duplicate`` without its body (stored once);
- a verified body Herald cannot fully read is stored with outcome ``unrecognised`` and a note.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import normalise, repository, verify
from services.ingest.normalise import DEFAULT_KEYWORDS, Context, Fact, Keywords
from shared import tracing
from shared.crypto import SecretBox, lookup_hash
from shared.events import new_event
from shared.logging import get_logger

log = get_logger(__name__)

PROVIDERS = ("meta", "chatwoot", "evolution", "waha")
EVENT_NAMESPACE = uuid.UUID("5d0c7a4e-3c55-4f0e-9a39-2f0f8f1f6a11")

WEBHOOKS = Counter("herald_ingest_webhooks_total", "Webhook requests by outcome", ["provider", "outcome"])
REJECTED = Counter(
    "herald_ingest_webhooks_rejected_total", "Webhooks refused at verification", ["provider", "reason"]
)


@dataclass(frozen=True)
class Source:
    id: uuid.UUID
    tenant_id: uuid.UUID
    provider: str
    channel_id: uuid.UUID | None
    secrets: dict[str, Any]


class _TTLCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def put(self, key: Any, value: Any) -> None:
        if len(self._items) > 50_000:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)

    def drop(self, key: Any) -> None:
        self._items.pop(key, None)


class Directory:
    """What the hot path needs to know besides the body, cached per replica for ``ttl`` seconds:
    the source and its decrypted secrets, the tenant's keywords and its phone → user id map.
    A change made through this replica's API is visible at once; through another, within ``ttl``."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, secret_key: str, ttl: float) -> None:
        self.engine = engine
        self.box = box
        self.secret_key = secret_key
        self.sources = _TTLCache(ttl)
        self.keywords = _TTLCache(ttl)
        self.users = _TTLCache(ttl)
        self.seen_contacts: set[tuple[uuid.UUID, str]] = set()

    def phone_hash(self, phone: str) -> str:
        return lookup_hash(self.secret_key, phone)

    async def source(self, provider: str, source_id: uuid.UUID) -> Source | None:
        cached = self.sources.get(source_id)
        if cached is not None:
            return cached if cached.provider == provider else None
        async with self.engine.connect() as conn:
            row = await repository.find_source(conn, source_id)
        if row is None:
            return None
        source = Source(
            row.id, row.tenant_id, row.provider, row.channel_id, json.loads(self.box.decrypt(row.secrets))
        )
        self.sources.put(source_id, source)
        return source if source.provider == provider else None

    async def tenant_keywords(self, tenant_id: uuid.UUID) -> Keywords:
        cached = self.keywords.get(tenant_id)
        if cached is not None:
            return cached
        async with self.engine.connect() as conn:
            row = await repository.get_keywords(conn, tenant_id)
        words = Keywords.of(row.opt_out, row.opt_in) if row else DEFAULT_KEYWORDS
        self.keywords.put(tenant_id, words)
        return words

    async def user_ids(self, tenant_id: uuid.UUID) -> dict[str, str]:
        cached = self.users.get(tenant_id)
        if cached is not None:
            return cached
        async with self.engine.connect() as conn:
            mapping = await repository.user_ids(conn, tenant_id)
        self.users.put(tenant_id, mapping)
        return mapping

    def forget_tenant(self, tenant_id: uuid.UUID) -> None:
        self.users.drop(tenant_id)
        self.keywords.drop(tenant_id)
        self.seen_contacts = {k for k in self.seen_contacts if k[0] != tenant_id}


STORE_SQL = """
WITH seq AS (
  SELECT nextval('ingest.webhook_deliveries_id_seq') AS id
), f AS (
  SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::bytea[], $12::text[], $13::bool[])
    AS f(dedupe_key, event_id, routing_key, body, phone_hash, is_media)
), k AS (
  INSERT INTO ingest.webhook_keys (tenant_id, provider, dedupe_key, delivery_id, phone_hash)
  SELECT $1, $3, f.dedupe_key, seq.id, f.phone_hash FROM f, seq
  ON CONFLICT DO NOTHING
  RETURNING dedupe_key
), d AS (
  INSERT INTO ingest.webhook_deliveries (id, tenant_id, source_id, provider, headers, body, outcome, event_count, note)
  SELECT seq.id, $1, $2, $3, $4::jsonb, dup.yes_body, dup.outcome, cardinality($8::text[]), $7
  FROM seq, LATERAL (
    SELECT CASE WHEN cardinality($8::text[]) > 0 AND NOT EXISTS (SELECT 1 FROM k) AND $6 = 'accepted'
                THEN 'duplicate' ELSE $6 END AS outcome,
           CASE WHEN cardinality($8::text[]) > 0 AND NOT EXISTS (SELECT 1 FROM k) AND $6 = 'accepted'
                THEN ''::bytea ELSE $5 END AS yes_body
  ) AS dup
  RETURNING id
), o AS (
  INSERT INTO ingest.outbox (event_id, routing_key, body)
  SELECT f.event_id, f.routing_key, f.body FROM f JOIN k USING (dedupe_key) WHERE NOT f.is_media
  RETURNING 1
), m AS (
  INSERT INTO ingest.media_jobs (tenant_id, source_id, delivery_id, event_id, event)
  SELECT $1, $2, seq.id, f.event_id, f.body FROM f JOIN k USING (dedupe_key), seq WHERE f.is_media
  ON CONFLICT (event_id) DO NOTHING
  RETURNING 1
), c AS (
  INSERT INTO ingest.contacts (tenant_id, phone_hash, phone)
  SELECT $1, x.ph, x.pe FROM unnest($14::text[], $15::text[]) AS x(ph, pe)
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT (SELECT id FROM d) AS delivery_id,
       (SELECT count(*) FROM k) AS fresh,
       (SELECT count(*) FROM o) AS published,
       (SELECT count(*) FROM m) AS media,
       (SELECT count(*) FROM c) AS new_contacts
"""


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """The hot path leaves no session state behind (single statements, no LISTEN, no SET), so the
    pool skips asyncpg's reset query on release: that would be a second round trip per webhook."""


class WebhookStore:
    def __init__(self, database_url: str, pool_size: int, timeout: float = 4.0) -> None:
        self.timeout = timeout
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.pool_size,
                        reset=_no_reset,
                        server_settings={"application_name": "herald-ingest-webhooks"},
                        timeout=5,
                    )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def store(self, args: list[Any]) -> asyncpg.Record:
        async with asyncio.timeout(self.timeout):
            pool = await self.pool()
            return await pool.fetchrow(STORE_SQL, *args)


@dataclass(frozen=True)
class Received:
    delivery_id: int
    outcome: str
    events: int
    duplicates: int


class Malformed(Exception):
    pass


async def record_rejection(engine: AsyncEngine, source: Source, reason: str) -> None:
    REJECTED.labels(source.provider, reason).inc()
    async with engine.begin() as conn:
        await repository.count_rejection(conn, source.tenant_id, reason)


def check(source: Source, body: bytes, headers: Mapping[str, str], *, chatwoot_skew: float) -> None:
    """Raise ``verify.Unverified`` unless the request is authentic for ``source``."""
    s = source.secrets
    if source.provider == "meta":
        verify.verify_meta(s["app_secret"], body, headers)
    elif source.provider == "chatwoot":
        verify.verify_chatwoot(
            s["webhook_secret"], body, headers, now=time.time(), max_skew_seconds=chatwoot_skew
        )
    elif source.provider == "waha":
        verify.verify_waha(s["hmac_key"], body, headers)
    else:
        verify.verify_evolution(s, headers, now=time.time())


KEPT_HEADERS = frozenset(
    {
        "content-type",
        "user-agent",
        "x-hub-signature-256",
        "x-chatwoot-delivery",
        "x-chatwoot-timestamp",
        "x-chatwoot-signature",
        "x-webhook-request-id",
        "x-webhook-timestamp",
        "x-webhook-hmac",
        "x-webhook-hmac-algorithm",
    }
)


class CoalescingWaker:
    """Wakes the outbox relay at most once per ``delay`` seconds, on the leading edge. Woken after
    every commit, the relay would publish batches of one row, each pass a transaction of its own.
    So the first commit after a quiet ``delay`` wakes it at once (a lone webhook is not made to
    wait), and commits that follow within ``delay`` of that wake-up are taken together by one more
    wake-up at the end of the window."""

    def __init__(
        self, wake: Callable[[], None], delay: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._wake = wake
        self._delay = delay
        self._clock = clock
        self._pending = False
        self._last = -math.inf

    def __call__(self) -> None:
        if self._pending:
            return
        since = self._clock() - self._last
        if since >= self._delay:
            self._fire()
            return
        self._pending = True
        asyncio.get_running_loop().call_later(self._delay - since, self._fire_pending)

    def _fire_pending(self) -> None:
        self._pending = False
        self._fire()

    def _fire(self) -> None:
        self._last = self._clock()
        self._wake()


def _nothing() -> None:
    return None


async def receive(
    *,
    source: Source,
    body: bytes,
    headers: Mapping[str, str],
    directory: Directory,
    store: WebhookStore,
    wake_relay: Callable[[], None] = _nothing,
    wake_media: Callable[[], None] = _nothing,
) -> Received:
    """Store a verified body and its events. Raises ``Malformed`` for a body that is not JSON."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"request body is not valid JSON: {exc}") from exc
    now = datetime.now(UTC)
    keywords = await directory.tenant_keywords(source.tenant_id)
    ctx = Context(source.provider, source.channel_id, keywords, now)
    try:
        result = normalise.NORMALISERS[source.provider](parsed, ctx)
    except RecursionError:
        result = normalise.Normalised()
        result.unknown("body nested too deeply")
    except Exception as exc:  # a shape the normaliser did not foresee: keep the body, flag it
        log.error(
            "normaliser failed; body stored as unrecognised", provider=source.provider, error=repr(exc)[:300]
        )
        result = normalise.Normalised()
        result.unknown(f"Herald could not read this body ({type(exc).__name__}); it is stored for review")
    facts: dict[str, Fact] = {}
    for fact in result.facts:
        facts.setdefault(fact.key, fact)
    users = await directory.user_ids(source.tenant_id) if facts else {}
    keys, ids, types, bodies, phone_hashes, is_media = [], [], [], [], [], []
    new_hashes: list[str] = []
    new_phones: list[str] = []
    src = f"/ingest/{source.provider}/{source.id}"
    for fact in facts.values():
        data = fact.data
        ph = directory.phone_hash(fact.phone) if fact.phone else None
        if ph is not None:
            if (source.tenant_id, ph) not in directory.seen_contacts and ph not in new_hashes:
                new_hashes.append(ph)
                new_phones.append(directory.box.encrypt(fact.phone))  # type: ignore[arg-type]
            if ph in users and hasattr(data, "user_id"):
                data = data.model_copy(update={"user_id": users[ph]})
        if fact.media is not None:
            data = data.model_copy(update={"media": {**(data.media or {}), "pending": fact.media}})  # type: ignore[attr-defined]
        event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"{source.tenant_id}:{source.provider}:{fact.key}"))
        event = tracing.inject(new_event(data, tenant_id=source.tenant_id, source=src, event_id=event_id))
        keys.append(fact.key)
        ids.append(event_id)
        types.append(event.type)
        bodies.append(event.model_dump_json().encode())
        phone_hashes.append(ph)
        is_media.append(fact.media is not None)
    outcome = "accepted" if result.recognised else "unrecognised"
    note = "; ".join(result.notes)[:2000] or None
    kept = {k: v for k, v in headers.items() if k in KEPT_HEADERS}
    row = await store.store(
        [
            source.tenant_id,
            source.id,
            source.provider,
            json.dumps(kept),
            body,
            outcome,
            note,
            keys,
            ids,
            types,
            bodies,
            phone_hashes,
            is_media,
            new_hashes,
            new_phones,
        ]
    )
    if len(directory.seen_contacts) > 500_000:
        directory.seen_contacts.clear()
    for ph in new_hashes:
        directory.seen_contacts.add((source.tenant_id, ph))
    if row["published"]:
        wake_relay()
    if row["media"]:
        wake_media()
    fresh = int(row["fresh"])
    final = "duplicate" if keys and fresh == 0 and outcome == "accepted" else outcome
    WEBHOOKS.labels(source.provider, final).inc()
    return Received(int(row["delivery_id"]), final, fresh, len(keys) - fresh)


def event_body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
