"""Pure parts of issue 13 in the sender: the analytics period and groups, what a failure code
means, and why a queued message waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.sender import analytics, domain
from services.sender.providers.base import Failure

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def test_a_period_is_local_days_in_its_zone_and_defaults_to_the_last_week():
    p = analytics.parse_period("2026-12-01", "2026-12-02", "America/Sao_Paulo", "day")
    assert p.since == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert p.until == datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
    d = analytics.parse_period(None, None, "UTC", "day", today=NOW)
    assert (d.start.isoformat(), d.end.isoformat(), d.days) == ("2026-11-27", "2026-12-03", 7)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("2026-12-01", "2026-12-02", "Nowhere/Land", "day"), "tz"),
        (("2026-12-01", "2026-12-02", "UTC", "minute"), "group_by"),
        (("01/12/2026", None, "UTC", "day"), "from"),
        (("2026-12-02", "2026-12-01", "UTC", "day"), "from"),
        (("2025-01-01", "2026-12-01", "UTC", "day"), "to"),
        (("2026-10-01", "2026-12-01", "UTC", "hour"), "group_by"),
    ],
)
def test_a_bad_query_names_the_parameter(args, field):
    with pytest.raises(analytics.PeriodError) as err:
        analytics.parse_period(*args)
    assert err.value.field == field


def test_day_and_hour_groups_cover_the_period_and_dst_days():
    lisbon = analytics.parse_period("2026-10-25", "2026-10-25", "Europe/Lisbon", "hour")
    keys = analytics.all_keys(lisbon, "hour")
    assert keys is not None and len(keys) == 24  # 25 hours, the repeated 01:00 is one local key
    by_key = {"2026-12-02": {"requested": 3, "sent": 2, "delivered": 2, "read": 1, "failed": 1}}
    out = analytics.groups(analytics.parse_period("2026-12-01", "2026-12-03", "UTC", "day"), "day", by_key)
    assert [g["key"] for g in out] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert out[0]["requested"] == 0 and out[0]["read_rate"] is None
    assert out[1]["read_rate"] == 0.5 and out[1]["queue_time_ms"] == {"mean": None, "p50": None, "p95": None}


def test_counts_add_up_and_percentiles_come_from_the_histograms_within_a_few_percent():
    import math
    import random
    from datetime import date

    rng = random.Random(7)
    values = {date(2026, 12, 1): [rng.lognormvariate(5, 1) for _ in range(999)], date(2026, 12, 2): [120.0]}
    rows = []
    for day, vs in values.items():
        buckets: dict[int, int] = {}
        for v in vs:
            b = math.floor(math.log(max(v, 1.0)) * analytics.BUCKETS_PER_E)
            buckets[b] = buckets.get(b, 0) + 1
        rows.append(
            {"key": day, "n": len(vs) + 1, "sent": len(vs), "delivered": 1, "read": 1, "failed": 1}
            | {"q_sum": sum(vs), "q_n": len(vs), "q_buckets": sorted(buckets)}
            | {"q_counts": [buckets[b] for b in sorted(buckets)], "d_buckets": None, "d_counts": None}
        )
    by_key, totals = analytics.combine(rows)
    assert set(by_key) == {"2026-12-01", "2026-12-02"}
    assert totals["requested"] == 1002 and totals["sent"] == 1000 and totals["failed"] == 2
    everything = sorted(v for vs in values.values() for v in vs)
    assert totals["q_mean"] == pytest.approx(sum(everything) / len(everything))
    exact_p95 = everything[math.ceil(0.95 * len(everything)) - 1]
    assert totals["q_p95"] == pytest.approx(exact_p95, rel=0.03)
    assert by_key["2026-12-02"]["q_p50"] == pytest.approx(120.0, rel=0.03)
    assert totals["d_p50"] is None


def test_a_failure_code_means_metas_words_or_the_stored_reason():
    assert (analytics.meaning("131026", True, "x") or "").startswith("Could not deliver")
    assert analytics.meaning("131026", False, "chatwoot: 131026?") == "chatwoot: 131026?"
    assert analytics.meaning("404", False, "waha: not found") == "waha: not found"
    assert analytics.meaning("window_closed", False, "closed") == "closed"


CHANNEL = {"paused": False, "breaker_open_until": None, "quiet_hours": None, "next_slot": None}


def msg(**extra) -> dict:
    return {"status": "queued", "not_before": NOW, "wait_reason": None, "wait_until": None, **extra}


def test_why_a_queued_message_waits():
    later = NOW + timedelta(seconds=30)
    assert domain.waiting(msg(), CHANNEL, NOW) is None
    assert domain.waiting(msg(status="sent"), {**CHANNEL, "paused": True}, NOW) is None
    assert domain.waiting(msg(), {**CHANNEL, "paused": True}, NOW) == ("paused", None)
    assert domain.waiting(msg(), {**CHANNEL, "breaker_open_until": later}, NOW) == ("breaker", later)
    recorded = msg(not_before=later, wait_reason="pair_interval", wait_until=later)
    assert domain.waiting(recorded, CHANNEL, NOW) == ("pair_interval", later)
    # a not_before changed by another path: the recorded reason no longer applies
    stale = msg(not_before=later, wait_reason="pair_interval", wait_until=NOW)
    assert domain.waiting(stale, CHANNEL, NOW) == ("not_before", later)
    assert domain.waiting(msg(), {**CHANNEL, "next_slot": later}, NOW) == ("throughput", later)
    quiet = {**CHANNEL, "quiet_hours": {"start": "14:00", "end": "16:30", "timezone": "UTC"}}
    assert domain.waiting(msg(), quiet, NOW) == ("quiet_hours", datetime(2026, 12, 3, 16, 30, tzinfo=UTC))


def test_a_retry_says_what_it_waits_for():
    assert domain.retry_wait_reason(Failure.THROTTLED) == "throughput"
    assert domain.retry_wait_reason(Failure.RETRY_RECIPIENT) == "pair_interval"
    assert domain.retry_wait_reason(Failure.RETRY) == "retry"
