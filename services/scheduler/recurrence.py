"""Recurrences in a time zone (pure): IANA zones, RRULEs and presets, local time to instant.

No I/O here. Every time handed in or out is timezone-aware; a recurrence is expanded on *local*
wall-clock times (a 09:00 schedule is 09:00 local on both sides of a DST change) and only then
turned into instants:

- a local time that does not exist (spring-forward gap) fires at the first valid minute after it
  (02:30 on a New York spring-forward day fires at 03:00 EDT);
- an ambiguous local time (fall-back) fires once, at its first instance (``fold=0``);
- two local times that land on the same instant fire once (``next_occurrence`` is strictly after).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil import rrule as du

#: longest search for the next occurrence (guards against a rule that never matches again)
MAX_SCAN = 50_000
#: an ambiguous (fall-back) stretch is at most this long: wall times this far before ``after``
#: can still be instants after it
LOOKBACK = timedelta(hours=3)
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


class ScheduleError(ValueError):
    """A request that cannot be scheduled; ``field`` names what to fix when the rule knows it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- time zones ------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or a ScheduleError that says what a valid name looks like."""
    if not name or ("/" not in name and name not in ("UTC", "GMT")):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as America/Sao_Paulo")
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as America/Sao_Paulo or Europe/Lisbon"
        ) from exc


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    if name not in _known_zones():
        raise ZoneInfoNotFoundError(name)
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _exists(local: datetime, tz: ZoneInfo) -> bool:
    aware = local.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local


def to_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall-clock time as a UTC instant: gap → first valid minute after; fold → first."""
    local = local.replace(tzinfo=None)
    if not _exists(local, tz):
        # Gaps are at most a day long (Samoa 2011); walk forward a minute at a time to the first
        # wall-clock minute that exists: the moment the clocks jumped to.
        probe = local.replace(second=0, microsecond=0)
        for _ in range(24 * 60 + 1):
            probe += timedelta(minutes=1)
            if _exists(probe, tz):
                local = probe
                break
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


# --- recurrences ----------------------------------------------------------------------------

PresetName = Literal[
    "daily", "weekly", "monthly", "weekdays", "first_weekday_of_month", "last_weekday_of_month"
]


@dataclass(frozen=True)
class Recurrence:
    """A rule expanded on local wall-clock times in ``timezone``, starting at local ``start``.

    ``rule`` is an RFC 5545 RRULE (without DTSTART); presets are stored as their RRULE.
    """

    timezone: str
    start: datetime  # naive, local
    rule: str

    def occurrences_after(self, after: datetime) -> Iterator[datetime]:
        """UTC instants strictly after ``after`` in order (deduplicated), lazily."""
        tz = zone(self.timezone)
        # Local-to-instant is monotone non-decreasing, so start a little before ``after``'s wall
        # time (an ambiguous hour can put later wall times at earlier instants) and skip forward.
        local_after = after.astimezone(tz).replace(tzinfo=None) - LOOKBACK
        last: datetime | None = None
        for scanned, local in enumerate(local_times(self.rule, self.start, local_after)):
            if scanned > MAX_SCAN:
                return
            instant = to_instant(local, tz)
            if instant <= after or instant == last:
                continue
            last = instant
            yield instant

    def next_after(self, after: datetime) -> datetime | None:
        return next(self.occurrences_after(after), None)

    def next_n(self, after: datetime, n: int) -> list[datetime]:
        out = []
        for instant in self.occurrences_after(after):
            out.append(instant)
            if len(out) >= n:
                break
        return out


_UNTIL_UTC = re.compile(r"UNTIL=(\d{8}T\d{6})Z", re.IGNORECASE)


_PLAIN_DAILY = re.compile(r"FREQ=DAILY(?:;INTERVAL=([1-9][0-9]{0,4}))?", re.IGNORECASE)


def local_times(rule: str, start: datetime, local_after: datetime) -> Iterator[datetime]:
    """The rule's local wall-clock times at or after ``local_after``, in order.

    A plain daily rule (the ``daily`` preset, ``FREQ=DAILY;INTERVAL=n``) is arithmetic on the
    start; anything else goes through dateutil, which walks every occurrence from DTSTART on each
    call (a cache miss per schedule, as every schedule has its own start: a fifth of the claim's
    CPU per row, and more the older the schedule). Both give the same times (tested)."""
    plain = _PLAIN_DAILY.fullmatch(rule)
    if plain is None:
        return _parse_rule(rule, start).xafter(local_after, inc=True)
    return _daily_times(start, timedelta(days=int(plain.group(1) or 1)), local_after)


def _daily_times(start: datetime, step: timedelta, local_after: datetime) -> Iterator[datetime]:
    first = start.replace(microsecond=0)  # as dateutil does with DTSTART
    k = max(0, -((first - local_after) // step))  # the first k with first + k·step >= local_after
    while True:
        yield first + k * step
        k += 1


def dateutil_times(rule: str, start: datetime, local_after: datetime) -> Iterator[datetime]:
    """``local_times`` always through dateutil (the reference the arithmetic path is tested against)."""
    return _parse_rule(rule, start).xafter(local_after, inc=True)


@lru_cache(maxsize=4096)
def _parse_rule(rule: str, start: datetime) -> du.rrulebase:
    """One RRULE, or several (one per line, e.g. pacing slots at different times) as their union."""
    if "\n" in rule:
        lines = "\n".join(f"RRULE:{line}" for line in rule.splitlines() if line)
        return du.rrulestr(lines, dtstart=start, forceset=True, ignoretz=True)
    return du.rrulestr(rule, dtstart=start, ignoretz=True)


def _fmt_local(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%S")


def build_recurrence(
    *,
    timezone: str,
    start: datetime,
    preset: str | None = None,
    days: list[str] | None = None,
    day_of_month: int | None = None,
    weekday: str | None = None,
    rrule: str | None = None,
    until: datetime | None = None,
    count: int | None = None,
) -> Recurrence:
    """Validate a recurrence as the API receives it; every problem is a ScheduleError naming it."""
    tz = zone(timezone)
    if start.tzinfo is not None:
        raise ScheduleError(
            "recurrence.start is a local wall-clock time without an offset, e.g. 2026-12-01T09:00:00; "
            "the time zone comes from recurrence.timezone"
        )
    start = start.replace(microsecond=0)
    if (preset is None) == (rrule is None):
        raise ScheduleError("recurrence needs exactly one of 'preset' or 'rrule'")
    if until is not None and count is not None:
        raise ScheduleError("recurrence takes 'until' or 'count', not both")
    if until is not None:
        if until.tzinfo is not None:
            until = until.astimezone(tz).replace(tzinfo=None)
        if until < start:
            raise ScheduleError(f"recurrence.until {until.isoformat()} is before start {start.isoformat()}")
    if count is not None and count < 1:
        raise ScheduleError("recurrence.count must be at least 1")
    if preset is not None:
        body = _preset_rule(preset, start, days=days, day_of_month=day_of_month, weekday=weekday)
    else:
        assert rrule is not None
        if days or day_of_month or weekday:
            raise ScheduleError("days, day_of_month and weekday go with a preset, not with an rrule")
        body = _normalise_rrule(rrule, tz)
    if until is not None:
        body += f";UNTIL={_fmt_local(until)}"
    if count is not None:
        body += f";COUNT={count}"
    try:
        _parse_rule(body, start)
    except (ValueError, TypeError) as exc:
        raise ScheduleError(f"invalid rule {body!r}: {exc}") from exc
    return Recurrence(timezone=timezone, start=start, rule=body)


def _preset_rule(
    preset: str, start: datetime, *, days: list[str] | None, day_of_month: int | None, weekday: str | None
) -> str:
    def weekday_code(value: str | None, field: str) -> str:
        code = (value or "").upper()[:2]
        if code not in WEEKDAYS:
            raise ScheduleError(f"{field} must be one of {', '.join(WEEKDAYS)} (got {value!r})")
        return code

    if preset == "daily":
        return "FREQ=DAILY"
    if preset == "weekdays":
        return "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    if preset == "weekly":
        codes = [weekday_code(d, "recurrence.days[]") for d in days or [WEEKDAYS[start.weekday()]]]
        return "FREQ=WEEKLY;BYDAY=" + ",".join(dict.fromkeys(codes))
    if preset == "monthly":
        day = day_of_month or start.day
        if not 1 <= day <= 31:
            raise ScheduleError("recurrence.day_of_month must be 1–31")
        # day 31 in a 30-day month: the last day of that month (BYMONTHDAY=-1 picks it)
        if day >= 29:
            return f"FREQ=MONTHLY;BYMONTHDAY={day},-1;BYSETPOS=1"
        return f"FREQ=MONTHLY;BYMONTHDAY={day}"
    if preset in ("first_weekday_of_month", "last_weekday_of_month"):
        code = weekday_code(weekday, "recurrence.weekday")
        return f"FREQ=MONTHLY;BYDAY={'+1' if preset.startswith('first') else '-1'}{code}"
    raise ScheduleError(
        f"unknown preset {preset!r}: use daily, weekly, monthly, weekdays, first_weekday_of_month, "
        "last_weekday_of_month, or give an rrule"
    )


def _normalise_rrule(rrule: str, tz: ZoneInfo) -> str:
    text = rrule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    if not text or "\n" in text or "DTSTART" in text.upper():
        raise ScheduleError(
            "rrule is one RFC 5545 RRULE line such as FREQ=MONTHLY;BYDAY=1MO; the start goes in "
            "recurrence.start"
        )
    parts = {p.split("=", 1)[0].upper() for p in text.split(";") if p}
    if "FREQ" not in parts:
        raise ScheduleError(f"invalid rrule {rrule!r}: FREQ is required, e.g. FREQ=WEEKLY;BYDAY=MO")
    if re.search(r"FREQ=SECONDLY", text, re.IGNORECASE) or "BYSECOND" in parts:
        raise ScheduleError("rrule: the finest recurrence is FREQ=MINUTELY; seconds are not supported")
    if "UNTIL" in parts or "COUNT" in parts:
        # UNTIL in UTC (…Z) is converted to local wall-clock time: rules expand in local time.
        def local_until(m: re.Match[str]) -> str:
            instant = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            return "UNTIL=" + _fmt_local(instant.astimezone(tz).replace(tzinfo=None))

        text = _UNTIL_UTC.sub(local_until, text)
    try:
        du.rrulestr(text, dtstart=datetime(2026, 1, 1, 9), ignoretz=True)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScheduleError(f"invalid rrule {rrule!r}: {exc}") from exc
    return text
