"""Pure sender rules: backoff with full jitter, quiet hours, slot quotas, Meta error classes,
Brazilian numbers without the ninth digit."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.sender.app import normalize_recipient
from services.sender.domain import QuietHours, backoff_seconds, can_move, slot_quota
from services.sender.providers.base import Failure
from services.sender.providers.meta_cloud import classify
from shared.phone import InvalidPhoneNumber


def test_backoff_is_full_jitter_under_an_exponential_ceiling_capped_at_30s():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (12, 30.0)]:
        draws = [backoff_seconds(attempt, rng=rng) for _ in range(400)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.9 and min(draws) < ceiling * 0.1, "not spread over [0, ceiling]"


def test_quiet_hours_across_midnight_end_next_morning_in_the_zone():
    qh = QuietHours.parse({"start": "22:00", "end": "08:00", "timezone": "America/Sao_Paulo"})
    late = datetime(2026, 3, 10, 23, 30, tzinfo=UTC) + timedelta(hours=3)  # 23:30 local
    until = qh.quiet_until(late)
    assert until is not None and until.astimezone(UTC) == datetime(2026, 3, 11, 11, 0, tzinfo=UTC)
    early = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)  # 07:00 local
    assert qh.quiet_until(early) == until
    assert qh.quiet_until(datetime(2026, 3, 11, 15, 0, tzinfo=UTC)) is None  # noon local
    with pytest.raises(ValueError, match="time zone"):
        QuietHours.parse({"start": "22:00", "end": "08:00", "timezone": "Mars/Olympus"})


def test_slot_quota_reserves_only_the_slots_inside_the_horizon():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert slot_quota(80, None, now, 0.25, 500) == 20
    assert slot_quota(80, now + timedelta(seconds=0.2), now, 0.25, 500) == 4
    assert slot_quota(80, now + timedelta(seconds=1), now, 0.25, 500) == 0
    assert slot_quota(100_000, None, now, 0.25, 500) == 500
    assert slot_quota(1, None, now, 0.25, 500) == 1


@pytest.mark.parametrize(
    ("code", "http", "failure"),
    [
        (130429, 400, Failure.THROTTLED),
        (80007, 400, Failure.RETRY),
        (131000, 500, Failure.RETRY),
        (131056, 400, Failure.RETRY_RECIPIENT),
        (131026, 400, Failure.PERMANENT),
        (132000, 400, Failure.PERMANENT),
        (132001, 404, Failure.PERMANENT),
        (100, 400, Failure.PERMANENT),
        (131050, 400, Failure.OPTED_OUT),
        (190, 401, Failure.PAUSE_CHANNEL),
        (368, 403, Failure.PAUSE_CHANNEL),
        (None, 503, Failure.RETRY),
        (None, 400, Failure.PERMANENT),
    ],
)
def test_meta_errors_are_classified_by_code(code, http, failure):
    assert classify(code, http) is failure


def test_statuses_never_move_backwards():
    assert can_move("sent", "delivered") and can_move("delivered", "read")
    assert not can_move("read", "delivered") and not can_move("failed", "sent")


def test_brazilian_mobiles_with_and_without_the_ninth_digit_are_one_number():
    assert normalize_recipient("+551187654321") == normalize_recipient("+5511987654321") == "+5511987654321"
    assert normalize_recipient("+551133334444") == "+551133334444"  # a landline keeps 8 digits
    with pytest.raises(InvalidPhoneNumber):
        normalize_recipient("+551100000030")
