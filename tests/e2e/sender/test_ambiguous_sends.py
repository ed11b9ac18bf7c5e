"""A provider call that gets no answer although the provider took the message (a read timeout,
a dropped connection): the sender resends it, because a loss is worse than a duplicate, but only
up to SENDER_MAX_AMBIGUOUS_RESENDS times per message; each such call is counted, and the history
says the resend may arrive twice. This is how a run of template sends to a slow Meta can give a
recipient the same message twice with no crash involved: the answer came after the sender's
HTTP timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import ServiceProcess, free_port, wait_for
from tests.conftest import Infra
from tests.e2e.sender.conftest import SENDER_ENV, MetaThread, SenderSystem, wait_status

pytestmark = pytest.mark.e2e

TEMPLATE = {"kind": "template", "name": "receipt", "language": "en_US"}


@pytest.fixture(scope="module")
def slow_answers(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SenderSystem]:
    tmp = Path(tmp_path_factory.mktemp("ambiguous"))
    env = infra.service_env(
        **{**SENDER_ENV, "SENDER_HTTP_TIMEOUT_SECONDS": "1", "SENDER_MAX_AMBIGUOUS_RESENDS": "1"}
    )
    meta = MetaThread().start()
    sender = ServiceProcess("sender", free_port(), env, tmp / "sender.log")
    sender.start()
    try:
        sender.wait_ready()
        yield SenderSystem(infra=infra, env=env, sender=sender, meta=meta, tmp=tmp)
    finally:
        sender.terminate()
        meta.stop()


def ambiguous_count(client, decision: str) -> float:
    lines = [
        line
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("herald_sender_ambiguous_sends_total{") and f'decision="{decision}"' in line
    ]
    return sum(float(line.split()[-1]) for line in lines)


def test_a_lost_answer_is_resent_once_and_says_it_may_arrive_twice(slow_answers: SenderSystem):
    system = slow_answers
    _, key = system.tenant("lost-answer")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    before = ambiguous_count(client, "resent")
    system.meta.fake.state.answer_delay = 3.0  # Meta takes the message, answers after the timeout
    try:
        message_id = client.post(
            "/v1/messages", json={"to": "+5511900000071", "content": TEMPLATE, "channel_id": channel["id"]}
        ).json()["id"]
        wait_for(lambda: system.meta.received_for(pnid), 15, "Meta to take the first send")
    finally:
        system.meta.fake.state.answer_delay = 0.0  # the resend is answered at once
    message = wait_status(client, message_id, "sent", timeout=30)
    assert len(system.meta.received_for(pnid)) == 2, "the documented duplicate: one lost answer, one resend"
    notes = [h["reason"] or "" for h in message["history"]]
    assert any("may arrive twice" in n and "(timeout)" in n for n in notes), notes
    assert ambiguous_count(client, "resent") == before + 1


def test_past_the_bound_a_message_is_not_sent_again_but_dead_lettered_for_an_operator(
    slow_answers: SenderSystem,
):
    system = slow_answers
    _, key = system.tenant("bounded")
    client = system.client(key)
    channel = system.meta_channel(client)
    pnid = channel["settings"]["phone_number_id"]
    before = ambiguous_count(client, "gave_up")
    system.meta.fake.state.answer_delay = 3.0  # every answer is lost
    try:
        message_id = client.post(
            "/v1/messages", json={"to": "+5511900000072", "content": TEMPLATE, "channel_id": channel["id"]}
        ).json()["id"]
        message = wait_status(client, message_id, "failed", timeout=40)
    finally:
        system.meta.fake.state.answer_delay = 0.0
    assert len(system.meta.received_for(pnid)) == 2, "sent once, resent once, then no more"
    assert message["dead_letter"] is True
    assert "may already have the message" in message["status_reason"], message["status_reason"]
    assert ambiguous_count(client, "gave_up") == before + 1
    # an operator who knows it did not arrive replays it: it goes out again
    assert client.post(f"/v1/dead-letters/{message_id}/replay").status_code in (200, 202)
    wait_status(client, message_id, "sent", timeout=30)
    assert len(system.meta.received_for(pnid)) == 3
