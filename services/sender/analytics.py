"""Delivery analytics, the pure part: the period a request names (local days in a time zone), the
groups it reports, and what a failure code means.

Definitions (the numbers match the messages' own statuses): a message belongs to the period of its
``created_at`` (when it was requested); ``sent`` counts those the provider has had (status sent,
delivered or read, or failed after the send), ``delivered`` those delivered or read, ``read`` those
read, ``failed`` those failed (before or after the send); ``read_rate`` = read / delivered. Queue time
is accepted → sent, delivery time sent → delivered, in milliseconds, over the messages that have
both times (null when none has); p50/p95 come from log-scale histograms (±2.5 %), the mean is exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

GroupBy = Literal["day", "hour", "channel", "template", "origin"]
GROUP_BY: tuple[str, ...] = ("day", "hour", "channel", "template", "origin")
MAX_DAYS = 366
MAX_HOUR_DAYS = 31
DEFAULT_DAYS = 7
TOP_FAILURES = 10

#: Meta's error codes (``shared/contracts/meta-cloud-api/error-codes.json``): what each means
META_MEANINGS: dict[str, str] = {
    "0": "Could not authenticate the app user (token expired/invalidated).",
    "1": "Invalid request or possible server error.",
    "2": "Temporary: downtime or overload.",
    "3": "Capability or permission issue.",
    "4": "App-level Graph API call rate limit reached (error_subcode may be set; is_transient=true).",
    "10": "Permission not granted or removed.",
    "100": "Unsupported/misspelled parameter, bad value, or recipient not a WhatsApp number in some cases.",
    "190": "Access token expired or invalid; get a new token (system-user tokens avoid expiry).",
    "368": "WABA restricted/disabled for a platform policy violation.",
    "80007": "WhatsApp Business Account-level Graph API rate limit reached (e.g. 'Business request limit reached').",
    "130429": "Cloud API throughput (messages per second for this business number) exceeded.",
    "130472": "Marketing message not sent because recipient is in a Meta experiment group.",
    "130497": "Country restriction for this business category.",
    "131000": "Unknown error.",
    "131005": "Permission not granted or removed.",
    "131008": "Request lacks a required parameter.",
    "131009": "A parameter value is invalid (e.g. bad phone number format, bad URL).",
    "131016": "A service is temporarily unavailable.",
    "131021": "Sender and recipient numbers are the same.",
    "131026": "Could not deliver: recipient not on WhatsApp, has not accepted current ToS, uses an outdated client, or (commonly) has blocked / is not reachable.",
    "131030": "Test/sandbox number may only message recipients added to its allowed list.",
    "131031": "Business account locked (policy / 2FA pin mismatch).",
    "131042": "Payment method / credit line problem on the WABA.",
    "131047": "More than 24 hours since the recipient last wrote: free-form (non-template) messages are not allowed outside the customer service window.",
    "131048": "Number restricted because too many previous messages were blocked/flagged as spam (quality-based rate limit).",
    "131049": "Marketing message withheld to maintain healthy ecosystem engagement (per-user marketing limit).",
    "131050": "Recipient opted out of marketing messages from this business.",
    "131051": "Inbound message type not supported (appears in inbound messages[].errors with type 'unsupported').",
    "131052": "Could not download media sent by the user.",
    "131053": "Could not upload/fetch the media for an outbound message (bad URL, unsupported type, size).",
    "131056": "Too many messages from this business number to the same recipient in a short period (~1 msg / 6 s sustained).",
    "131057": "Business number temporarily unusable, e.g. during the throughput upgrade (up to ~1 min).",
    "132000": "Template variable count mismatch for a component (details like 'body: number of localizable_params (0) does not match the expected number of params (1)').",
    "132001": "No approved template with that name in that language (language.code must match exactly, e.g. en_US vs en).",
    "132005": "Text after parameter substitution exceeds the limit.",
    "132007": "Template content violates a WhatsApp policy.",
    "132012": "Parameter type/format differs from the approved template (e.g. header expects IMAGE).",
    "132015": "Template paused for low quality.",
    "132016": "Template permanently disabled for low quality.",
    "133010": "Business phone number not registered on the WhatsApp Business Platform.",
}


class PeriodError(ValueError):
    """A bad query parameter: ``field`` names it, the message says what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Period:
    start: date  # first local day
    end: date  # last local day (inclusive)
    tz: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def since(self) -> datetime:
        """The first instant of the period (local midnight of ``start``)."""
        return datetime.combine(self.start, time(0), tzinfo=self.zone)

    @property
    def until(self) -> datetime:
        """The instant after the period (local midnight after ``end``)."""
        return datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=self.zone)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def parse_period(
    start: str | None, end: str | None, tz: str, group_by: str, today: datetime | None = None
) -> Period:
    """The period from the query's ``from``/``to`` (local dates, inclusive; the last 7 days
    up to today in ``tz`` by default), checked: a known zone, from ≤ to, ≤ 366 days (31 by hour)."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError(
            "tz", f"unknown time zone {tz!r}: give an IANA name such as Europe/Lisbon"
        ) from None
    if group_by not in GROUP_BY:
        raise PeriodError("group_by", f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}")

    def day(value: str | None, field: str) -> date | None:
        if value is None or value == "":
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PeriodError(field, f"{field} must be a date YYYY-MM-DD, not {value!r}") from None

    first, last = day(start, "from"), day(end, "to")
    local_today = (today or datetime.now(zone)).astimezone(zone).date()
    if last is None:
        last = local_today if first is None else first + timedelta(days=DEFAULT_DAYS - 1)
    if first is None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise PeriodError("from", f"from ({first}) is after to ({last})")
    period = Period(first, last, tz)
    if period.days > MAX_DAYS:
        raise PeriodError("to", f"the period is {period.days} days; at most {MAX_DAYS}: narrow from/to")
    if group_by == "hour" and period.days > MAX_HOUR_DAYS:
        raise PeriodError(
            "group_by", f"group_by=hour covers at most {MAX_HOUR_DAYS} days ({period.days} asked): use day"
        )
    return period


def all_keys(period: Period, group_by: str) -> list[str] | None:
    """Every day (or local hour) of the period, so a chart has no holes; None for other groupings."""
    if group_by == "day":
        return [(period.start + timedelta(days=i)).isoformat() for i in range(period.days)]
    if group_by == "hour":
        # step in UTC: aware arithmetic in a zone is wall-clock (a DST day has 23 or 25 hours)
        zone, keys, at, end = period.zone, [], period.since.astimezone(UTC), period.until.astimezone(UTC)
        while at < end:
            key = at.astimezone(zone).strftime("%Y-%m-%dT%H:00")
            if not keys or keys[-1] != key:
                keys.append(key)
            at += timedelta(hours=1)
        return keys
    return None


#: the histograms' resolution (repository.analytics): a bucket b holds [e^(b/K), e^((b+1)/K)) ms
BUCKETS_PER_E = 20


def key_text(value: Any) -> str | None:
    """A group key as the API shows it: a local day YYYY-MM-DD, a local hour YYYY-MM-DDTHH:00, or text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:00")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def percentile(histogram: Mapping[int, int], p: float) -> float | None:
    """The nearest-rank ``p`` percentile of a log-bucket histogram: the geometric middle of the
    bucket holding it (within ±2.5 % of the exact value)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(p * total)), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return math.exp((bucket + 0.5) / BUCKETS_PER_E)
    return None  # unreachable


def combine(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str | None, dict[str, Any]], dict[str, Any]]:
    """The repository's rows (counts and histograms per key) as one aggregate per key, and the
    totals (counts and histograms add up exactly)."""
    acc: dict[str | None, dict[str, Any]] = {}
    totals: dict[str, Any] = {"q": Counter(), "d": Counter(), "q_sum": 0.0}
    for r in rows:
        a: dict[str, Any] = {f: int(r[f] or 0) for f in ("sent", "delivered", "read", "failed", "q_n")}
        a["requested"] = int(r["n"] or 0)
        a["q_sum"] = float(r["q_sum"] or 0)
        a["q"] = Counter(dict(zip(r["q_buckets"] or [], map(int, r["q_counts"] or []), strict=True)))
        a["d"] = Counter(dict(zip(r["d_buckets"] or [], map(int, r["d_counts"] or []), strict=True)))
        acc[key_text(r["key"])] = a
        for f in ("requested", "sent", "delivered", "read", "failed", "q_n"):
            totals[f] = totals.get(f, 0) + a[f]
        totals["q_sum"] += a["q_sum"]
        totals["q"].update(a["q"])
        totals["d"].update(a["d"])
    return {k: _finish(a) for k, a in acc.items()}, _finish(totals)


def _finish(a: dict[str, Any]) -> dict[str, Any]:
    n = a.get("q_n") or 0
    return {
        **{f: a.get(f, 0) for f in ("requested", "sent", "delivered", "read", "failed")},
        "q_mean": a["q_sum"] / n if n else None,
        "q_p50": percentile(a["q"], 0.5),
        "q_p95": percentile(a["q"], 0.95),
        "d_p50": percentile(a["d"], 0.5),
        "d_p95": percentile(a["d"], 0.95),
    }


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def group(key: str | None, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """One G of the contract from an aggregate row (None: nothing in the group)."""
    r = row or {}
    delivered = int(r.get("delivered") or 0)
    read = int(r.get("read") or 0)
    return {
        "key": key,
        "requested": int(r.get("requested") or 0),
        "sent": int(r.get("sent") or 0),
        "delivered": delivered,
        "read": read,
        "failed": int(r.get("failed") or 0),
        "queue_time_ms": {
            "mean": _ms(r.get("q_mean")),
            "p50": _ms(r.get("q_p50")),
            "p95": _ms(r.get("q_p95")),
        },
        "delivery_time_ms": {"p50": _ms(r.get("d_p50")), "p95": _ms(r.get("d_p95"))},
        "read_rate": round(read / delivered, 4) if delivered else None,
    }


def groups(
    period: Period, group_by: str, by_key: Mapping[str | None, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The groups in order: every day/hour of the period (empty ones too), else by requested."""
    keys = all_keys(period, group_by)
    if keys is not None:
        return [group(k, by_key.get(k)) for k in keys]
    ordered = sorted(by_key, key=lambda k: (-int(by_key[k]["requested"]), k is None, k or ""))
    return [group(k, by_key[k]) for k in ordered]


def meaning(code: str | None, meta: bool, stored_reason: str | None) -> str | None:
    """What a failure code means: Meta's table for a Meta code, else the reason stored with it."""
    if code is not None and meta and code in META_MEANINGS:
        return META_MEANINGS[code]
    return stored_reason


# --- the rollup's read plan (repository.analytics.rollup_figures, migration 0011) ------------------
#
# The rollup holds figures per UTC hour and per UTC day. A period (or a local day) is a sum of
# those pieces: the whole UTC days inside it, and the hours at its ends, or, where fewer rows, the
# whole day minus the hours outside (the figures and histograms are counts: they subtract exactly).
# A zone whose offset is not whole hours (Asia/Kolkata, Australia/Adelaide, …) cuts hours in two:
# ``plan`` says None and the figures are read from the messages themselves.

HOUR, DAY = 0, 1
Pieces = dict[tuple[int, datetime], list[tuple[int, Any]]]
_H, _D = timedelta(hours=1), timedelta(days=1)


def _floor_day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _hours(a: datetime, b: datetime) -> list[datetime]:
    out = []
    while a < b:
        out.append(a)
        a += _H
    return out


def _aligned(at: datetime) -> bool:
    return at.minute == 0 and at.second == 0 and at.microsecond == 0


def _end(left: list[datetime], day: datetime, outside: list[datetime]) -> list[tuple[int, datetime, int]]:
    """The hours ``left`` of UTC ``day``: themselves, or the day minus the ``outside`` ones."""
    if 1 + len(outside) < len(left):
        return [(DAY, day, 1), *((HOUR, h, -1) for h in outside)]
    return [(HOUR, h, 1) for h in left]


def decompose(a: datetime, b: datetime) -> list[tuple[int, datetime, int]]:
    """[a, b) (UTC, whole hours) as (granularity, bucket, sign) rollup pieces, fewest rows first."""
    a, b = a.astimezone(UTC), b.astimezone(UTC)
    first = _floor_day(a)
    d0 = first if a == first else first + _D  # the first whole UTC day inside
    d1 = _floor_day(b)  # the day b falls in (its hours before b are the right end)
    if d0 > d1:  # inside one UTC day
        return _end(_hours(a, b), first, _hours(first, a) + _hours(b, first + _D))
    out = _end(_hours(a, d0), first, _hours(first, a)) if a < d0 else []
    day = d0
    while day < d1:
        out.append((DAY, day, 1))
        day += _D
    if d1 < b:
        out += _end(_hours(d1, b), d1, _hours(b, d1 + _D))
    return out


def plan(period: Period, group_by: str) -> Pieces | None:
    """The rollup pieces of the period, each with the (sign, group key) it adds to — the key is
    the local day or hour, and None for a dimension (the rows carry it) — or None when the zone
    cuts hours in two somewhere in the period."""
    zone, since, until = period.zone, period.since.astimezone(UTC), period.until.astimezone(UTC)
    pieces: Pieces = {}

    def add(items: list[tuple[int, datetime, int]], key: Any) -> None:
        for granularity, bucket, sign in items:
            pieces.setdefault((granularity, bucket), []).append((sign, key))

    if not (_aligned(since) and _aligned(until)):
        return None
    if group_by == "hour":
        for h in _hours(since, until):
            if not _aligned(h.astimezone(zone)):
                return None
            pieces[(HOUR, h)] = [(1, h.astimezone(zone).strftime("%Y-%m-%dT%H:00"))]
        return pieces
    if group_by == "day":
        for i in range(period.days):
            day = period.start + timedelta(days=i)
            a = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
            b = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
            if not (_aligned(a) and _aligned(b)):
                return None
            add(decompose(a, b), day.isoformat())
        return pieces
    add(decompose(since, until), None)
    return pieces


def dimension(group_by: str) -> str:
    """The rollup dimension a grouping reads (a time grouping reads the totals of every hour)."""
    return group_by if group_by in ("channel", "template", "origin") else "none"


FIELDS = ("n", "sent", "delivered", "read", "failed", "q_n")


def blank() -> dict[str, Any]:
    """An empty sum of figures: the counts, the queue-time sum and the two histograms."""
    return {**dict.fromkeys(FIELDS, 0), "q_sum": 0.0, "q": Counter(), "d": Counter()}


def add_row(a: dict[str, Any], r: Any, sign: int = 1) -> None:
    """Add (sign 1) or take away (-1) a rollup row: counts, queue-time sum, histogram arrays."""
    for f in FIELDS:
        a[f] += sign * getattr(r, f)
    a["q_sum"] += sign * r.q_sum
    for b, n in zip(r.q_bins, r.q_counts, strict=True):
        a["q"][b] += sign * n
    for b, n in zip(r.d_bins, r.d_counts, strict=True):
        a["d"][b] += sign * n


def add_cell(a: dict[str, Any], c: Any) -> None:
    """Add a cell of summed deltas (its messages' histogram buckets ``qb``/``db``, weight ``n``)."""
    for f in FIELDS:
        a[f] += int(getattr(c, f))
    a["q_sum"] += float(c.q_sum)
    if c.qb is not None:
        a["q"][c.qb] += int(c.n)
    if c.db is not None:
        a["d"][c.db] += int(c.n)


def histograms(a: dict[str, Any]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The queue- and delivery-time histograms of a sum, as sorted (bucket, count), empty ones out."""
    return sorted((b, n) for b, n in a["q"].items() if n), sorted((b, n) for b, n in a["d"].items() if n)


def fold(
    rolled: Iterable[Any], pending: Iterable[Any], pieces: Pieces, group_by: str, zone: ZoneInfo
) -> list[dict[str, Any]]:
    """Rollup rows (signed by their pieces) and pending delta cells added up per group key, in the
    shape of ``repository.analytics.message_figures`` (so ``combine`` reads either)."""
    acc: dict[Any, dict[str, Any]] = {}
    by_dim = group_by not in ("day", "hour")

    def into(key: Any) -> dict[str, Any]:
        a = acc.get(key)
        if a is None:
            a = acc[key] = blank()
        return a

    for r in rolled:
        for sign, key in pieces.get((DAY if r.level >= 4 else HOUR, r.bucket), ()):
            add_row(into((r.dim or None) if by_dim else key), r, sign)
    for c in pending:
        if by_dim:
            key = c.dim or None
        elif group_by == "day":
            key = c.hour.astimezone(zone).date().isoformat()
        else:
            key = c.hour.astimezone(zone).strftime("%Y-%m-%dT%H:00")
        add_cell(into(key), c)
    rows = []
    for key, a in acc.items():
        if a["n"] == 0:  # every message it had moved to another group
            continue
        q, d = histograms(a)
        rows.append(
            {
                "key": key,
                **{f: a[f] for f in FIELDS},
                "q_sum": a["q_sum"],
                "q_buckets": [b for b, _ in q],
                "q_counts": [n for _, n in q],
                "d_buckets": [b for b, _ in d],
                "d_counts": [n for _, n in d],
            }
        )
    return rows
