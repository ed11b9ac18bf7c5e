"""The conversation policy: note, question, answer, run, give up, expiry. Pure, with a set clock."""

from datetime import UTC, datetime, timedelta

import pytest

from services.pipeline import conversation as policy
from services.pipeline import domain
from shared.events import ButtonsContent, ListContent, MessageRequested

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
EN = policy.Profile(language="en")
PT = policy.Profile(language="pt_BR", platforms=("linkedin", "instagram"), topics=("cardápio",))


def reply(text: str | None, payload: str | None = None, ref: str = "meta:m2") -> policy.Reply:
    return policy.Reply(ref=ref, text=text, payload=payload)


def ask_platform(profile: policy.Profile = EN) -> policy.Ask:
    d = policy.decide(reply("write a post about our new menu", ref="meta:m1"), None, profile, [], NOW)
    assert isinstance(d, policy.Ask)
    return d


def test_a_note_is_stored_and_nothing_is_sent() -> None:
    assert policy.decide(reply("the chef tested twelve desserts"), None, EN, [], NOW) == policy.Note()


def test_a_complete_order_runs_at_once() -> None:
    d = policy.decide(reply("write me a LinkedIn post about our new menu", ref="meta:m1"), None, EN, [], NOW)
    assert d == policy.Run({"platform": "linkedin", "topic": "our new menu"}, "meta:m1", "en")


def test_a_missing_platform_is_asked_once_as_a_list_of_four() -> None:
    d = ask_platform()
    assert d.context.field == "platform" and d.context.attempts == 1 and d.context.order_ref == "meta:m1"
    assert d.context.expires_at == NOW + domain.CONTEXT_TTL
    q = policy.question(d)
    assert isinstance(q, ListContent) and q.button == "Choose"
    assert [r.title for r in q.sections[0].rows] == ["LinkedIn", "Instagram", "X (Twitter)", "Blog"]
    # the sender accepts it as it is
    MessageRequested(message_id="00000000-0000-0000-0000-000000000001", to="+5511988887777", content=q)


def test_the_profiles_platforms_are_the_buttons_in_the_users_language() -> None:
    d = policy.decide(reply("escreve um post curto sobre o cardápio", ref="meta:m1"), None, PT, [], NOW)
    assert isinstance(d, policy.Ask)
    q = policy.question(d)
    assert isinstance(q, ButtonsContent) and q.body == "Para qual rede é este post?"
    assert [(b.id, b.title) for b in q.buttons] == [
        ("platform:linkedin", "LinkedIn"),
        ("platform:instagram", "Instagram"),
    ]


@pytest.mark.parametrize(("payload", "text"), [("platform:blog", "Blog"), (None, "blog"), (None, "4")])
def test_the_answer_completes_the_order(payload: str | None, text: str) -> None:
    ctx = ask_platform().context
    d = policy.decide(reply(text, payload), ctx, EN, [], NOW + timedelta(minutes=5))
    assert d == policy.Run({"platform": "blog", "topic": "our new menu"}, "meta:m1", "en")


def test_a_missing_topic_is_asked_next_with_the_notes_keywords() -> None:
    d = policy.decide(reply("write a post", ref="meta:m1"), None, EN, ["feijoada", "desserts"], NOW)
    assert isinstance(d, policy.Ask) and d.context.field == "platform"
    d = policy.decide(reply("LinkedIn"), d.context, EN, ["feijoada", "desserts"], NOW)
    assert isinstance(d, policy.Ask) and d.context.field == "topic" and d.context.attempts == 1
    q = policy.question(d)
    assert isinstance(q, ButtonsContent) and [b.title for b in q.buttons] == ["feijoada", "desserts"]
    # a topic may be the user's own words
    d = policy.decide(reply("our summer opening hours"), d.context, EN, [], NOW)
    assert d == policy.Run({"platform": "linkedin", "topic": "our summer opening hours"}, "meta:m1", "en")


def test_a_profile_topic_or_no_notes_means_no_topic_question() -> None:
    d = policy.decide(reply("escreve um post pro LinkedIn", ref="meta:m1"), None, PT, ["x"], NOW)
    assert d == policy.Run({"platform": "linkedin"}, "meta:m1", "pt_BR")
    d = policy.decide(reply("write a LinkedIn post", ref="meta:m1"), None, EN, [], NOW)
    assert isinstance(d, policy.Run)  # nothing to offer: the job says "no notes" if there are none


def test_an_unmatched_answer_is_asked_once_more_then_dropped() -> None:
    ctx = ask_platform().context
    d = policy.decide(reply("banana"), ctx, EN, [], NOW)
    assert isinstance(d, policy.Ask) and d.again and d.context.attempts == 2
    assert policy.question(d).body.startswith("Sorry, I didn't get that. ")
    assert policy.decide(reply("banana again"), d.context, EN, [], NOW) == policy.GiveUp("en")


def test_an_expired_context_starts_over() -> None:
    ctx = ask_platform().context
    late = ctx.expires_at + timedelta(seconds=1)
    assert policy.decide(reply("2"), ctx, EN, [], late) == policy.Note(drop_context=True)
    d = policy.decide(reply("write an Instagram post about summer"), ctx, EN, [], late)
    assert isinstance(d, policy.Run) and d.order_ref == "meta:m2"


def test_a_new_order_replaces_the_open_question() -> None:
    ctx = ask_platform().context
    d = policy.decide(reply("write a tweet about coffee", ref="meta:m3"), ctx, EN, [], NOW)
    assert d == policy.Run({"platform": "x", "topic": "coffee"}, "meta:m3", "en")


def test_expiry_and_asking_again_are_decided_by_the_clock_and_the_count() -> None:
    assert not domain.is_expired(NOW + timedelta(seconds=1), NOW)
    assert domain.is_expired(NOW, NOW)
    assert domain.may_ask_again(1) and not domain.may_ask_again(2)


def test_the_failure_message_says_what_happened_and_what_to_do() -> None:
    assert "no notes" in policy.failure_text("en", "no notes to write from")
    assert "notas" in policy.failure_text("pt_BR", "no notes to write from")
    assert "ask again in a few minutes" in policy.failure_text("en", "model unavailable")
