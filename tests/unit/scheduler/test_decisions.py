"""The scheduler's decisions as pure rules (``services/scheduler/domain.py``): facts in, decision
out, no database. Each one used to be made inline in a handler or a route."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain import (
    FirePlan,
    Recurrence,
    ReminderRule,
    ScheduleError,
    advance,
    build_recurrence,
    default_policy,
    default_reminder_rules,
    event_fields,
    first_due,
    is_scheduler_message,
    is_stale,
    next_occurrences,
    occurrence_message_id,
    pacing_plan,
    pacing_slots,
    pacing_times,
    plan_due,
    policy_rules,
    recurrence_of,
    refused_null,
    reminder_action,
    reminder_pairs,
)

SP = ZoneInfo("America/Sao_Paulo")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, 09:00 in São Paulo
SCHEDULE = uuid.UUID("11111111-2222-3333-4444-555555555555")


def daily_at_9() -> Recurrence:
    return build_recurrence(timezone="America/Sao_Paulo", start=datetime(2026, 3, 3, 9, 0), preset="daily")


# --- scheduled messages ---------------------------------------------------------------------------


def test_an_edit_may_null_only_channel_fallback_and_grace():
    assert refused_null({"channel_id": None, "fallback_template": None, "grace_seconds": None}) is None
    assert refused_null({"priority": 3, "text": None}) == "text"
    assert refused_null({"send_at": None}) == "send_at"
    assert refused_null({}) is None


def test_first_due_of_a_one_off_is_its_send_at_and_refuses_the_past():
    later = NOW + timedelta(hours=2)
    assert first_due(later, None, NOW) == later
    with pytest.raises(ScheduleError, match="in the past"):
        first_due(NOW - timedelta(minutes=1), None, NOW)


def test_first_due_of_a_recurrence_is_its_next_occurrence_and_refuses_an_exhausted_one():
    rec = daily_at_9()
    assert first_due(None, rec, NOW) == datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    ended = build_recurrence(
        timezone="America/Sao_Paulo", start=datetime(2026, 1, 1, 9, 0), preset="daily", count=2
    )
    with pytest.raises(ScheduleError, match="no occurrence after now"):
        first_due(None, ended, NOW)


def test_next_occurrences_are_five_while_pending_and_none_after():
    rec = daily_at_9()
    first = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    upcoming = next_occurrences("pending", first, rec)
    assert upcoming == [first + timedelta(days=d) for d in range(5)]
    assert next_occurrences("pending", first, None) == [first]
    assert next_occurrences("cancelled", first, rec) == []


def test_recurrence_of_a_row_rebuilds_it_or_is_none_for_a_one_off():
    rec = daily_at_9()
    row = SimpleNamespace(timezone=rec.timezone, start_local=rec.start, rule=rec.rule)
    assert recurrence_of(row) == rec
    assert recurrence_of(SimpleNamespace(timezone=None, start_local=None, rule=None)) is None


# --- where a fired schedule goes next ---------------------------------------------------------


def test_a_one_off_that_fires_is_published_with_its_own_message_id():
    due = NOW - timedelta(seconds=1)
    mid = occurrence_message_id(SCHEDULE, due)
    step = advance(SCHEDULE, due, mid, plan_due(due, NOW, timedelta(hours=1), None), recurring=False)
    assert (step.status, step.send_at, step.message_id, step.fired_id) == ("published", due, mid, mid)


def test_a_one_off_too_late_is_missed_and_fires_nothing():
    due = NOW - timedelta(hours=2)
    mid = occurrence_message_id(SCHEDULE, due)
    step = advance(SCHEDULE, due, mid, plan_due(due, NOW, timedelta(hours=1), None), recurring=False)
    assert (step.status, step.send_at, step.fired_id) == ("missed", due, None)


def test_a_recurrence_waits_for_its_next_occurrence_with_that_occurrences_id():
    rec = daily_at_9()
    due = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    plan = plan_due(due, due + timedelta(seconds=1), timedelta(hours=1), rec)
    step = advance(SCHEDULE, due, occurrence_message_id(SCHEDULE, due), plan, recurring=True)
    following = due + timedelta(days=1)
    assert step.status == "pending" and step.send_at == following
    assert step.message_id == occurrence_message_id(SCHEDULE, following)
    assert step.fired_id == occurrence_message_id(SCHEDULE, due)


def test_after_downtime_the_occurrence_fired_gets_its_own_id_not_the_stale_one():
    due = NOW - timedelta(days=1)
    fire = NOW - timedelta(minutes=1)
    plan = FirePlan(fire=fire, missed=[due], missed_uncounted=False, next_due=None)
    step = advance(SCHEDULE, due, occurrence_message_id(SCHEDULE, due), plan, recurring=True)
    assert step.fired_id == occurrence_message_id(SCHEDULE, fire)
    assert (step.status, step.send_at, step.message_id) == ("completed", fire, step.fired_id)


# --- reminders ------------------------------------------------------------------------------------


def test_no_stored_policy_means_the_built_in_one():
    assert policy_rules(None) == default_reminder_rules()
    assert policy_rules([]) == default_reminder_rules()
    assert [r["name"] for r in default_policy()] == ["7d", "1d", "day_of"]
    assert default_policy()[2]["at"] == "09:00"


def test_a_stored_policy_becomes_rules_with_defaults_filled_in():
    (rule,) = policy_rules(
        [
            {
                "name": "vip",
                "minutes_before": 60,
                "attendee_filter": {"ticket_type": "VIP", "a": "b"},
                "template": {"name": "vip_lounge", "language": "en_US"},
            }
        ]
    )
    assert rule.template_name == "vip_lounge" and rule.template_language == "en_US"
    assert rule.body_params == default_reminder_rules()[0].body_params
    assert rule.attendee_filter == (("a", "b"), ("ticket_type", "VIP"))
    assert rule.at is None and rule.minutes_before == 60


def test_event_fields_are_local_to_the_event():
    fields = event_fields("ev-1", "Launch", datetime(2026, 3, 10, 22, 30, tzinfo=UTC), "America/Sao_Paulo")
    assert fields == {
        "id": "ev-1",
        "name": "Launch",
        "start_local": "2026-03-10 19:30",
        "date": "2026-03-10",
        "time": "19:30",
        "timezone": "America/Sao_Paulo",
    }


def test_each_phone_gets_each_matching_reminder_once():
    everyone = ReminderRule("1d", "t", None, (), days_before=1)
    vip = ReminderRule("vip", "t", None, (), minutes_before=60, attendee_filter=(("ticket", "VIP"),))
    attendees = [("hash-a", {"ticket": "VIP"}), ("hash-b", {}), ("hash-a", {"ticket": "VIP"})]
    pairs = reminder_pairs(attendees, [everyone, vip])
    assert [(i, r.name) for i, r in pairs] == [(0, "1d"), (0, "vip"), (1, "1d")]


def test_an_older_event_arriving_late_is_stale():
    t = NOW
    assert is_stale(t, [t - timedelta(seconds=1)], None) is False
    assert is_stale(t, [t + timedelta(seconds=1)], None) is True
    assert is_stale(t, [], t) is True, "cancelled by an event at the same time or later"
    assert is_stale(t, [], t - timedelta(seconds=1)) is False


def test_replanning_a_reminder_depends_on_its_row_and_on_the_grace_period():
    grace = timedelta(hours=1)
    soon, long_past = NOW + timedelta(days=1), NOW - timedelta(hours=2)
    assert reminder_action(None, soon, NOW, grace) == "insert"
    assert reminder_action(None, long_past, NOW, grace) == "skip"
    assert reminder_action("pending", soon, NOW, grace) == "update"
    assert reminder_action("cancelled", soon, NOW, grace) == "update"
    assert reminder_action("pending", long_past, NOW, grace) == "cancel"
    assert reminder_action("published", soon, NOW, grace) == "keep"
    assert reminder_action("missed", soon, NOW, grace) == "keep"


# --- pacing ---------------------------------------------------------------------------------------


def test_a_pacing_problem_names_the_field_to_fix():
    with pytest.raises(ScheduleError) as bad_zone:
        pacing_plan("Mars/Olympus", ["MO"], [time(9, 0)], NOW)
    assert bad_zone.value.field == "timezone"
    with pytest.raises(ScheduleError) as no_times:
        pacing_plan("Europe/Lisbon", ["MO"], [], NOW)
    assert no_times.value.field == "times"


def test_pacing_times_are_stored_sorted_and_once():
    assert pacing_times([time(17, 30), time(9, 0), time(9, 0, 30)]) == ["09:00", "17:30"]


def test_pacing_slots_are_the_next_five_and_none_while_paused():
    rec = pacing_plan("America/Sao_Paulo", ["MO", "WE"], [time(9, 0)], NOW)
    first = rec.next_after(NOW)
    assert first is not None
    slots = pacing_slots(True, first, rec)
    assert len(slots) == 5 and slots[0] == first
    assert all(s.astimezone(SP).strftime("%a %H:%M") in ("Mon 09:00", "Wed 09:00") for s in slots)
    assert pacing_slots(False, first, rec) == []
    assert pacing_slots(True, None, rec) == []


# --- delivery status ------------------------------------------------------------------------------


def test_only_statuses_of_messages_the_scheduler_requested_are_followed():
    assert is_scheduler_message("schedule:123")
    assert is_scheduler_message("event:ev-1:7d")
    assert is_scheduler_message(None)
    assert not is_scheduler_message("pipeline:draft-9")
