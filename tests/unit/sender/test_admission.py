"""Admission, failure, breaker and delivery-status rules of the sender: pure, no database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.sender import domain
from services.sender.domain import Admit, Candidate, ChannelLimits, Delay, Facts, GiveUp, Retry
from services.sender.providers.base import Failure

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TEXT = {"kind": "text", "body": "hi"}
TEMPLATE = {"kind": "template", "name": "order_ready", "language": "pt_BR"}
OPEN = ChannelLimits(rate=10, next_slot=None, pair_interval=0, tier=None, enforce_window=False)


def msg(
    h: str = "h1", content: dict | None = None, fallback: dict | None = None, unreadable: str | None = None
):
    return Candidate(uuid.uuid4(), h, content or TEXT, fallback, unreadable)


@dataclass
class Blocked:
    name: str
    language: str
    status: str
    reason: str | None
    at: datetime


def test_admitted_messages_get_slots_one_over_the_rate_apart_from_the_channel_next_slot():
    start = NOW + timedelta(seconds=2)
    limits = ChannelLimits(rate=4, next_slot=start, pair_interval=0, tier=None, enforce_window=False)
    out = domain.admit([msg("a"), msg("b"), msg("c")], limits, Facts(), NOW)
    assert [a.slot for a in out.admitted] == [
        start,
        start + timedelta(seconds=0.25),
        start + timedelta(seconds=0.5),
    ]
    assert out.next_slot(limits, NOW) == start + timedelta(seconds=0.75)


def test_an_opted_out_recipient_is_refused_and_not_a_dead_letter():
    out = domain.admit([msg("gone"), msg("ok")], OPEN, Facts(opted_out={"gone"}), NOW)
    assert [r.code for r in out.refused] == ["opted_out"] and not out.refused[0].dead_letter
    assert len(out.admitted) == 1 and out.admitted[0].candidate.recipient_hash == "ok"


def test_a_closed_window_sends_the_fallback_template_or_refuses_free_form():
    limits = ChannelLimits(rate=10, next_slot=None, pair_interval=0, tier=None, enforce_window=True)
    with_fallback, without = msg("x", fallback=TEMPLATE), msg("y")
    inside = msg("z")
    out = domain.admit([with_fallback, without, inside], limits, Facts(open_window={"z"}), NOW)
    by_id = {a.candidate.id: a for a in out.admitted}
    assert by_id[with_fallback.id].content == TEMPLATE and by_id[with_fallback.id].used_fallback
    assert by_id[with_fallback.id].note == domain.FALLBACK_NOTE
    assert by_id[inside.id].content == TEXT and not by_id[inside.id].used_fallback
    assert [(r.candidate.id, r.code) for r in out.refused] == [(without.id, "window_closed")]
    # a template needs no window
    assert domain.admit([msg("y", content=TEMPLATE)], limits, Facts(), NOW).admitted


def test_a_template_meta_will_not_send_is_a_dead_letter_naming_its_status():
    blocked = {("order_ready", "pt_BR"): Blocked("order_ready", "pt_BR", "PAUSED", "Low quality", NOW)}
    out = domain.admit([msg(content=TEMPLATE), msg()], OPEN, Facts(blocked_templates=blocked), NOW)
    assert len(out.refused) == 1
    r = out.refused[0]
    assert (
        r.code == "template_paused"
        and r.dead_letter
        and "PAUSED at Meta" in r.reason
        and "Low quality" in r.reason
    )
    assert domain.template_names([TEMPLATE, TEXT, None, {"kind": "template"}]) == {"order_ready"}


def test_an_unreadable_message_fails_alone():
    out = domain.admit([msg(unreadable="bad key"), msg()], OPEN, Facts(), NOW)
    assert [r.code for r in out.refused] == ["unreadable"] and len(out.admitted) == 1


def test_the_pair_interval_delays_a_second_message_to_one_recipient_not_the_others():
    limits = ChannelLimits(rate=10, next_slot=None, pair_interval=6, tier=None, enforce_window=False)
    first, second, other = msg("a"), msg("a"), msg("b")
    out = domain.admit([first, second, other], limits, Facts(), NOW)
    assert [a.candidate.id for a in out.admitted] == [first.id, other.id]
    assert out.delayed == [Delay(second, NOW + timedelta(seconds=6), "pair")]
    assert out.pair_next == {"a": NOW + timedelta(seconds=6), "b": NOW + timedelta(seconds=6.1)}
    # a recipient still inside its interval from an earlier pass waits for it
    later = NOW + timedelta(seconds=3)
    out = domain.admit([msg("a")], limits, Facts(pair_next={"a": later}), NOW)
    assert out.delayed[0].until == later and not out.admitted


def test_the_tier_counts_new_recipients_only_and_delays_past_it_until_the_oldest_leaves():
    limits = ChannelLimits(rate=10, next_slot=None, pair_interval=0, tier=2, enforce_window=False)
    oldest = NOW - timedelta(hours=20)
    facts = Facts(tier_count=1, tier_oldest=oldest, tier_known={"known"})
    known, new1, new2 = msg("known"), msg("new1"), msg("new2")
    out = domain.admit([known, new1, new2], limits, facts, NOW)
    assert [a.candidate.id for a in out.admitted] == [known.id, new1.id]
    assert out.tier_new == ["new1"]
    assert out.delayed == [Delay(new2, oldest + timedelta(hours=24), "tier")]


def test_checks_come_before_limits_so_a_refused_message_takes_no_slot():
    limits = ChannelLimits(rate=1, next_slot=None, pair_interval=0, tier=None, enforce_window=False)
    out = domain.admit([msg("gone"), msg("ok")], limits, Facts(opted_out={"gone"}), NOW)
    assert out.admitted == [Admit(out.admitted[0].candidate, TEXT, NOW)]


def test_a_half_open_breaker_takes_one_probe():
    args = dict(rate=80, next_slot=None, now=NOW, horizon=0.25, cap=500)
    assert domain.claim_quota(consecutive_failures=5, breaker_threshold=5, **args) == 1
    assert domain.claim_quota(consecutive_failures=4, breaker_threshold=5, **args) == 20


def test_the_providers_throughput_limit_slows_the_channel_instead_of_tripping_the_breaker():
    kw = dict(code="130429", reason="meta: throughput", max_attempts=5, backoff=1.5)
    out = domain.after_failure(Failure.THROTTLED, attempts=1, **kw)
    assert isinstance(out.decision, Retry) and out.decision.delay == 1.5
    assert out.slow_channel and not out.counts_against_channel and not out.pause_channel
    out = domain.after_failure(Failure.THROTTLED, attempts=5, **kw)
    assert out.decision == GiveUp("gave up after 5 attempts: meta: throughput", dead_letter=True)
    assert not domain.after_failure(Failure.RETRY, attempts=1, **kw).slow_channel


def test_a_transient_failure_retries_with_backoff_then_gives_up_as_a_dead_letter():
    kw = dict(code="503", reason="meta: unavailable", max_attempts=5, backoff=1.5)
    out = domain.after_failure(Failure.RETRY, attempts=2, **kw)
    assert out.decision == Retry(1.5, "attempt 2/5 failed (503), retry in 1.5 s: meta: unavailable")
    assert out.counts_against_channel and not out.pause_channel
    out = domain.after_failure(Failure.RETRY, attempts=5, **kw)
    assert out.decision == GiveUp("gave up after 5 attempts: meta: unavailable", dead_letter=True)
    assert out.counts_against_channel


def test_the_retry_note_says_when_the_retry_really_happens():
    kw = dict(code="503", reason="r", attempts=1, max_attempts=5, backoff=0.1)
    assert domain.after_failure(Failure.RETRY, pair_wait=6.0, **kw).decision.delay == 6.0
    assert domain.after_failure(Failure.RETRY, retry_after=30, **kw).decision.delay == 30
    assert "retry in 6.0 s" in domain.after_failure(Failure.RETRY, pair_wait=6.0, **kw).decision.note
    # the pair limit (131056): at least max(6 s, the interval), doubling per attempt
    kw["attempts"] = 3
    out = domain.after_failure(Failure.RETRY_RECIPIENT, pair_interval=2, **kw)
    assert out.decision.delay == 24.0 and not out.counts_against_channel


@pytest.mark.parametrize(
    ("failure", "dead", "opt_out", "pause"),
    [
        (Failure.PERMANENT, True, False, False),
        (Failure.OPTED_OUT, False, True, False),
        (Failure.PAUSE_CHANNEL, True, False, True),
    ],
)
def test_a_final_failure_says_what_else_it_changes(failure, dead, opt_out, pause):
    out = domain.after_failure(failure, code="x", reason="why", attempts=1, max_attempts=5, backoff=1)
    assert out.decision == GiveUp("why", dead_letter=dead)
    assert (out.record_opt_out, out.pause_channel, out.counts_against_channel) == (opt_out, pause, False)


def test_meta_refusing_a_paused_template_records_the_template_status():
    kw = dict(code="132015", reason="r", attempts=1, max_attempts=5, backoff=1)
    assert (
        domain.after_failure(Failure.PERMANENT, provider="meta", is_template=True, **kw).template_status
        == "PAUSED"
    )
    assert (
        domain.after_failure(Failure.PERMANENT, provider="meta", is_template=False, **kw).template_status
        is None
    )
    assert (
        domain.after_failure(Failure.PERMANENT, provider="waha", is_template=True, **kw).template_status
        is None
    )


def test_breaker_states():
    def state(**kw):
        base = dict(paused=False, open_until=None, consecutive_failures=0, threshold=5, now=NOW)
        return domain.breaker_state(**{**base, **kw})

    assert state() == "closed"
    assert state(paused=True, open_until=NOW + timedelta(seconds=9)) == "paused"
    assert state(open_until=NOW + timedelta(seconds=9), consecutive_failures=5) == "open"
    assert state(open_until=NOW - timedelta(seconds=1), consecutive_failures=5) == "half_open"
    assert domain.breaker_opens(5, 5) and not domain.breaker_opens(4, 5)


def test_delivery_statuses_map_onto_the_one_ranking():
    assert domain.DELIVERY_STATUS["played"] == "read"
    assert domain.can_move("sent", domain.DELIVERY_STATUS["delivered"])
    assert not domain.can_move("read", domain.DELIVERY_STATUS["delivered"])


def test_a_lost_answer_is_resent_up_to_the_bound_then_becomes_a_dead_letter():
    """A call that may have reached the provider but got no answer: resent (the note warns of a
    possible duplicate) while the message's such attempts stay within the bound; past it, not
    sent again, so lost answers duplicate one message at most ``max_ambiguous_resends`` times."""
    kw = dict(code="timeout", reason="meta: no answer", max_attempts=5, backoff=1.0, provider="meta")
    out = domain.after_failure(Failure.RETRY, attempts=1, ambiguous_attempts=1, max_ambiguous_resends=1, **kw)
    assert isinstance(out.decision, Retry)
    assert out.decision.note.endswith("the provider may already have it, so the resend may arrive twice")
    out = domain.after_failure(Failure.RETRY, attempts=2, ambiguous_attempts=2, max_ambiguous_resends=1, **kw)
    assert isinstance(out.decision, GiveUp) and out.decision.dead_letter
    assert "may already have the message" in out.decision.reason and "replay" in out.decision.reason
    never = domain.after_failure(
        Failure.RETRY, attempts=1, ambiguous_attempts=1, max_ambiguous_resends=0, **kw
    )
    assert isinstance(never.decision, GiveUp)
    certain = domain.after_failure(
        Failure.RETRY, attempts=1, ambiguous_attempts=0, max_ambiguous_resends=0, **kw
    )
    assert isinstance(certain.decision, Retry) and "twice" not in certain.decision.note
