"""Recurrences in the user's time zone, with a controllable clock (every ``now`` is given)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain import (
    DEFAULT_GRACE,
    ScheduleError,
    build_recurrence,
    default_reminder_rules,
    delivery_moves,
    occurrence_message_id,
    pacing_recurrence,
    plan_due,
    render_param,
    to_instant,
)

SP = ZoneInfo("America/Sao_Paulo")
LIS = ZoneInfo("Europe/Lisbon")
NY = ZoneInfo("America/New_York")


def local(instants: list[datetime], tz: ZoneInfo) -> list[str]:
    return [i.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %z") for i in instants]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- presets ------------------------------------------------------------------------------------


def test_daily_preset_keeps_local_time():
    r = build_recurrence(timezone="Europe/Lisbon", start=datetime(2026, 12, 1, 9, 0), preset="daily")
    assert local(r.next_n(utc(2026, 11, 30), 3), LIS) == [
        "Tue 2026-12-01 09:00 +0000",
        "Wed 2026-12-02 09:00 +0000",
        "Thu 2026-12-03 09:00 +0000",
    ]


def test_weekly_preset_on_given_days():
    r = build_recurrence(
        timezone="America/New_York", start=datetime(2026, 12, 1, 18, 30), preset="weekly", days=["MO", "th"]
    )
    assert local(r.next_n(utc(2026, 11, 30), 4), NY) == [
        "Thu 2026-12-03 18:30 -0500",
        "Mon 2026-12-07 18:30 -0500",
        "Thu 2026-12-10 18:30 -0500",
        "Mon 2026-12-14 18:30 -0500",
    ]


def test_weekly_preset_defaults_to_the_start_weekday():
    r = build_recurrence(timezone="UTC", start=datetime(2026, 12, 2, 8, 0), preset="weekly")
    assert [d.strftime("%a %d") for d in r.next_n(utc(2026, 12, 1), 2)] == ["Wed 02", "Wed 09"]


def test_every_weekday_skips_weekends():
    r = build_recurrence(timezone="America/Sao_Paulo", start=datetime(2026, 12, 4, 9, 0), preset="weekdays")
    assert [d.astimezone(SP).strftime("%a") for d in r.next_n(utc(2026, 12, 1), 5)] == [
        "Fri",
        "Mon",
        "Tue",
        "Wed",
        "Thu",
    ]


def test_monthly_on_the_31st_uses_the_last_day_of_short_months():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 31, 9, 0), preset="monthly")
    assert [d.strftime("%m-%d") for d in r.next_n(utc(2027, 1, 1), 4)] == ["01-31", "02-28", "03-31", "04-30"]


def test_monthly_on_a_given_day():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9, 0), preset="monthly", day_of_month=15)
    assert [d.strftime("%m-%d") for d in r.next_n(utc(2027, 1, 1), 3)] == ["01-15", "02-15", "03-15"]


def test_first_and_last_weekday_of_the_month():
    first = build_recurrence(
        timezone="UTC", start=datetime(2027, 1, 1, 9), preset="first_weekday_of_month", weekday="MO"
    )
    assert [d.strftime("%m-%d") for d in first.next_n(utc(2027, 1, 1), 3)] == ["01-04", "02-01", "03-01"]
    last = build_recurrence(
        timezone="UTC", start=datetime(2027, 1, 1, 9), preset="last_weekday_of_month", weekday="FR"
    )
    assert [d.strftime("%m-%d") for d in last.next_n(utc(2027, 1, 1), 3)] == ["01-29", "02-26", "03-26"]


# --- RRULE edge cases -------------------------------------------------------------------------


def test_rrule_with_count_ends():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9), rrule="FREQ=DAILY;COUNT=2")
    assert len(r.next_n(utc(2026, 1, 1), 10)) == 2
    assert r.next_after(utc(2027, 1, 2, 9)) is None


def test_count_field_and_until_field():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9), preset="daily", count=3)
    assert len(r.next_n(utc(2026, 1, 1), 10)) == 3
    r = build_recurrence(
        timezone="UTC", start=datetime(2027, 1, 1, 9), preset="daily", until=datetime(2027, 1, 4, 9)
    )
    assert len(r.next_n(utc(2026, 1, 1), 10)) == 4


def test_rrule_until_in_utc_is_read_as_that_instant():
    r = build_recurrence(
        timezone="America/Sao_Paulo",
        start=datetime(2027, 1, 1, 9),
        rrule="RRULE:FREQ=DAILY;UNTIL=20270103T120000Z",  # 09:00 in São Paulo
    )
    assert local(r.next_n(utc(2026, 1, 1), 10), SP) == [
        "Fri 2027-01-01 09:00 -0300",
        "Sat 2027-01-02 09:00 -0300",
        "Sun 2027-01-03 09:00 -0300",
    ]


def test_rrule_leap_day_and_nth_weekday():
    leap = build_recurrence(
        timezone="UTC", start=datetime(2028, 2, 29, 9), rrule="FREQ=YEARLY;BYMONTHDAY=29;BYMONTH=2"
    )
    assert [d.year for d in leap.next_n(utc(2027, 1, 1), 2)] == [2028, 2032]
    second_tuesday = build_recurrence(
        timezone="UTC", start=datetime(2027, 1, 1, 9), rrule="FREQ=MONTHLY;BYDAY=2TU"
    )
    assert [d.strftime("%m-%d") for d in second_tuesday.next_n(utc(2027, 1, 1), 2)] == ["01-12", "02-09"]


def test_plain_daily_arithmetic_matches_dateutil():
    """The claim computes plain daily rules without dateutil; every time must be the one dateutil
    gives, for any start (with seconds and microseconds), interval and point of resumption,
    including resumptions years after the start and before it."""
    import random

    from services.scheduler.recurrence import Recurrence, dateutil_times, local_times

    rng = random.Random(20261206)
    compared = 0
    for _ in range(400):
        start = datetime(2020, 1, 1) + timedelta(
            seconds=rng.randrange(0, 8 * 365 * 86400), microseconds=rng.randrange(10**6)
        )
        rule = rng.choice(
            ["FREQ=DAILY", "FREQ=DAILY;INTERVAL=1", f"FREQ=DAILY;INTERVAL={rng.randint(2, 40)}", "freq=daily"]
        )
        after = start + timedelta(seconds=rng.randrange(-30 * 86400, 3 * 365 * 86400))
        fast = local_times(rule, start, after)
        reference = dateutil_times(rule, start, after)
        got = [next(fast) for _ in range(5)]
        assert got == [next(reference) for _ in range(5)], (rule, start, after)
        compared += 1
    # and through time zones with DST, as instants
    for tz in ("America/New_York", "Europe/Lisbon", "America/Sao_Paulo", "Australia/Lord_Howe"):
        rec = Recurrence(timezone=tz, start=datetime(2025, 3, 9, 2, 30), rule="FREQ=DAILY")
        after = utc(2025, 3, 1)
        reference = rec.next_n(after, 400)
        assert len(reference) == 400
        # the same walk with dateutil: the arithmetic path is only taken for plain daily rules
        slow = Recurrence(
            timezone=tz, start=datetime(2025, 3, 9, 2, 30), rule="FREQ=DAILY;BYHOUR=2;BYMINUTE=30"
        )
        assert reference == slow.next_n(after, 400), tz
    assert compared == 400


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"rrule": "FREQ=FORTNIGHTLY"}, "invalid rrule"),
        ({"rrule": "BYDAY=MO"}, "FREQ is required"),
        ({"rrule": "FREQ=SECONDLY"}, "MINUTELY"),
        ({"rrule": "FREQ=DAILY", "preset": "daily"}, "exactly one"),
        ({"preset": "hourly"}, "unknown preset"),
        ({"preset": "weekly", "days": ["XX"]}, "must be one of"),
        ({"preset": "first_weekday_of_month"}, "recurrence.weekday"),
        ({"preset": "daily", "count": 2, "until": datetime(2028, 1, 1)}, "not both"),
        ({"preset": "daily", "until": datetime(2026, 1, 1)}, "before start"),
        ({"preset": "daily", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"preset": "daily", "timezone": "EST5EDT-ish"}, "unknown time zone"),
    ],
)
def test_invalid_rules_say_what_is_wrong(kwargs, problem):
    args = {"timezone": "UTC", "start": datetime(2027, 1, 1, 9), **kwargs}
    with pytest.raises(ScheduleError, match=problem):
        build_recurrence(**args)


def test_start_with_an_offset_is_refused():
    with pytest.raises(ScheduleError, match="local wall-clock"):
        build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9, tzinfo=UTC), preset="daily")


# --- DST -----------------------------------------------------------------------------------------


def test_new_york_nine_am_stays_nine_am_across_both_changes():
    r = build_recurrence(timezone="America/New_York", start=datetime(2027, 3, 12, 9), preset="daily")
    spring = r.next_n(utc(2027, 3, 12), 4)  # DST starts Sun 2027-03-14
    assert local(spring, NY) == [
        "Fri 2027-03-12 09:00 -0500",
        "Sat 2027-03-13 09:00 -0500",
        "Sun 2027-03-14 09:00 -0400",
        "Mon 2027-03-15 09:00 -0400",
    ]
    assert spring[3] - spring[1] == timedelta(hours=47)
    fall = r.next_n(utc(2027, 11, 6), 2)  # DST ends Sun 2027-11-07
    assert local(fall, NY) == ["Sat 2027-11-06 09:00 -0400", "Sun 2027-11-07 09:00 -0500"]


def test_nonexistent_local_time_fires_at_the_first_valid_minute_after():
    r = build_recurrence(timezone="America/New_York", start=datetime(2027, 3, 13, 2, 30), preset="daily")
    assert local(r.next_n(utc(2027, 3, 13), 3), NY) == [
        "Sat 2027-03-13 02:30 -0500",
        "Sun 2027-03-14 03:00 -0400",  # 02:30 does not exist that day
        "Mon 2027-03-15 02:30 -0400",
    ]
    # Lisbon jumps 01:00 → 02:00 on 2027-03-28
    assert to_instant(datetime(2027, 3, 28, 1, 15), LIS).astimezone(LIS).strftime("%H:%M %z") == "02:00 +0100"


def test_ambiguous_local_time_fires_once_at_its_first_instance():
    r = build_recurrence(timezone="Europe/Lisbon", start=datetime(2027, 10, 30, 1, 30), preset="daily")
    # Lisbon falls back 02:00 → 01:00 on Sun 2027-10-31: 01:30 happens twice
    got = r.next_n(utc(2027, 10, 30), 3)
    assert local(got, LIS) == [
        "Sat 2027-10-30 01:30 +0100",
        "Sun 2027-10-31 01:30 +0100",
        "Mon 2027-11-01 01:30 +0000",
    ]
    # asking "after the first 01:30" does not yield the second 01:30
    assert local([r.next_after(got[1])], LIS) == ["Mon 2027-11-01 01:30 +0000"]


def test_hourly_rule_through_a_gap_and_a_fold_fires_each_instant_once():
    r = build_recurrence(
        timezone="America/New_York", start=datetime(2027, 3, 14, 0, 0), rrule="FREQ=MINUTELY;INTERVAL=30"
    )
    got = r.next_n(utc(2027, 3, 14, 5), 6)  # 00:00 EST
    assert local(got, NY) == [
        "Sun 2027-03-14 00:30 -0500",
        "Sun 2027-03-14 01:00 -0500",
        "Sun 2027-03-14 01:30 -0500",
        "Sun 2027-03-14 03:00 -0400",  # 02:00 and 02:30 do not exist: one message at 03:00
        "Sun 2027-03-14 03:30 -0400",
        "Sun 2027-03-14 04:00 -0400",
    ]
    fall = r.next_n(utc(2027, 11, 7, 4, 45), 4)  # 00:45 EDT; 01:00–01:59 happens twice
    assert local(fall, NY) == [
        "Sun 2027-11-07 01:00 -0400",
        "Sun 2027-11-07 01:30 -0400",
        "Sun 2027-11-07 02:00 -0500",
        "Sun 2027-11-07 02:30 -0500",
    ]


def test_sao_paulo_historical_dst_and_none_since_2019():
    r = build_recurrence(timezone="America/Sao_Paulo", start=datetime(2018, 11, 1, 0, 0), preset="daily")
    # 2018-11-04: clocks jumped 00:00 → 01:00 (last DST start in São Paulo)
    got = r.next_n(utc(2018, 11, 2, 12), 3)
    assert local(got, SP) == [
        "Sat 2018-11-03 00:00 -0300",
        "Sun 2018-11-04 01:00 -0200",
        "Mon 2018-11-05 00:00 -0200",
    ]
    nine = build_recurrence(timezone="America/Sao_Paulo", start=datetime(2026, 10, 30, 9), preset="daily")
    # no change any more in early November
    assert {d.astimezone(SP).strftime("%H:%M %z") for d in nine.next_n(utc(2026, 10, 30), 10)} == {
        "09:00 -0300"
    }


# --- grace and missed ------------------------------------------------------------------------


def test_one_off_within_grace_fires_once_and_finishes():
    due = utc(2027, 1, 1, 9)
    plan = plan_due(due, due + timedelta(minutes=40), DEFAULT_GRACE, None)
    assert plan.fire == due and plan.missed == [] and plan.next_due is None


def test_one_off_older_than_grace_is_missed():
    due = utc(2027, 1, 1, 9)
    plan = plan_due(due, due + timedelta(hours=1, seconds=1), DEFAULT_GRACE, None)
    assert plan.fire is None and plan.missed == [due] and plan.next_due is None


def test_recurrence_after_downtime_records_missed_and_moves_on():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9), preset="daily")
    now = utc(2027, 1, 4, 9, 30)  # down since before Jan 1st 09:00
    plan = plan_due(utc(2027, 1, 1, 9), now, DEFAULT_GRACE, r)
    assert plan.missed == [utc(2027, 1, 1, 9), utc(2027, 1, 2, 9), utc(2027, 1, 3, 9)]
    assert plan.fire == utc(2027, 1, 4, 9)
    assert plan.next_due == utc(2027, 1, 5, 9)


def test_recurrence_all_missed_waits_for_the_next():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9), preset="daily")
    plan = plan_due(utc(2027, 1, 1, 9), utc(2027, 1, 2, 12), timedelta(minutes=5), r)
    assert plan.fire is None and plan.missed == [utc(2027, 1, 1, 9), utc(2027, 1, 2, 9)]
    assert plan.next_due == utc(2027, 1, 3, 9)


def test_several_within_grace_each_fire_once_in_order():
    r = build_recurrence(timezone="UTC", start=datetime(2027, 1, 1, 9), rrule="FREQ=MINUTELY;INTERVAL=15")
    now = utc(2027, 1, 1, 9, 40)
    plan = plan_due(utc(2027, 1, 1, 9), now, DEFAULT_GRACE, r)
    assert plan.fire == utc(2027, 1, 1, 9) and plan.next_due == utc(2027, 1, 1, 9, 15)
    plan = plan_due(plan.next_due, now, DEFAULT_GRACE, r)
    assert plan.fire == utc(2027, 1, 1, 9, 15) and plan.next_due == utc(2027, 1, 1, 9, 30)


def test_long_outage_is_summarised_not_walked():
    r = build_recurrence(timezone="UTC", start=datetime(2026, 1, 1, 9), rrule="FREQ=MINUTELY")
    now = utc(2026, 1, 8, 9, 0, 30)
    plan = plan_due(utc(2026, 1, 1, 9), now, timedelta(minutes=1), r)
    assert plan.missed_uncounted and len(plan.missed) == 50
    assert plan.fire == utc(2026, 1, 8, 9, 0)


def test_message_id_is_deterministic_per_occurrence():
    sid = uuid.uuid4()
    a = occurrence_message_id(sid, utc(2027, 1, 1, 9))
    assert a == occurrence_message_id(sid, datetime(2027, 1, 1, 6, tzinfo=ZoneInfo("America/Sao_Paulo")))
    assert a != occurrence_message_id(sid, utc(2027, 1, 2, 9))


# --- reminders and pacing ------------------------------------------------------------------------


def test_default_reminders_are_7_days_1_day_and_the_morning_local():
    starts = datetime(2027, 4, 10, 20, 0, tzinfo=LIS)
    due = {r.name: r.due_at(starts.astimezone(UTC), LIS).astimezone(LIS) for r in default_reminder_rules()}
    assert {k: v.strftime("%m-%d %H:%M %z") for k, v in due.items()} == {
        "7d": "04-03 20:00 +0100",
        "1d": "04-09 20:00 +0100",
        "day_of": "04-10 09:00 +0100",
    }


def test_body_params_reference_event_and_attendee_fields():
    event = {"name": "Jazz Night", "start_local": "10/04 20:00"}
    attendee = {"name": "Ana", "attributes": {"ticket_type": "VIP"}}
    assert render_param("{attendee.name}", event, attendee) == "Ana"
    assert render_param("{event.name} ({attendee.ticket_type})", event, attendee) == "Jazz Night (VIP)"
    assert render_param("{attendee.nickname}", event, {"name": None}) == "-"


def test_pacing_slots_on_days_and_times():
    r = pacing_recurrence("Europe/Lisbon", ["MO", "WE"], [time(9, 0), time(17, 30)], utc(2026, 11, 30))
    assert local(r.next_n(utc(2026, 11, 30), 5), LIS) == [
        "Mon 2026-11-30 09:00 +0000",
        "Mon 2026-11-30 17:30 +0000",
        "Wed 2026-12-02 09:00 +0000",
        "Wed 2026-12-02 17:30 +0000",
        "Mon 2026-12-07 09:00 +0000",
    ]
    with pytest.raises(ScheduleError, match="days"):
        pacing_recurrence("UTC", ["XX"], [time(9)], utc(2026, 11, 30))


@pytest.mark.parametrize(
    "current, new, moves",
    [
        (None, "queued", True),
        ("queued", "sent", True),
        ("delivered", "sent", False),
        ("read", "delivered", False),
        ("sent", "failed", True),
        ("delivered", "failed", False),
        ("failed", "read", False),
    ],
)
def test_delivery_status_only_moves_forward(current, new, moves):
    assert delivery_moves(current, new) is moves


def test_reminders_across_a_dst_change_stay_at_local_times():
    # New York springs forward on Sun 2027-03-14; an event at 19:00 local on Tue 2027-03-16
    starts = datetime(2027, 3, 16, 19, 0, tzinfo=NY).astimezone(UTC)
    due = {r.name: r.due_at(starts, NY).astimezone(NY) for r in default_reminder_rules()}
    assert {k: v.strftime("%m-%d %H:%M %z") for k, v in due.items()} == {
        "7d": "03-09 19:00 -0500",
        "1d": "03-15 19:00 -0400",
        "day_of": "03-16 09:00 -0400",
    }
