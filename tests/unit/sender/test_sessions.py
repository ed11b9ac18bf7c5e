"""Gateway sessions: the webhooks ingest turns into channel.session_changed, and what a session
state does to its channel's pause (services.sender.sessions.decide), pure."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.ingest.normalise.common import DEFAULT_KEYWORDS, Context
from services.ingest.normalise.evolution import evolution
from services.ingest.normalise.waha import waha
from services.sender.providers.evolution import classify_evolution_error
from services.sender.providers.gateway import SessionDown
from services.sender.providers.waha import classify_waha_error
from services.sender.sessions import decide, pause_text
from shared.events import ChannelSessionChanged

CONTRACTS = Path("/work/shared/contracts")
CHANNEL = uuid.uuid4()
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def ctx(provider: str, channel_id: uuid.UUID | None = CHANNEL) -> Context:
    return Context(provider, channel_id, DEFAULT_KEYWORDS, NOW)


def example(path: str) -> dict:
    body = json.loads((CONTRACTS / path).read_text())
    body.pop("_comment", None)
    return body


def sessions_of(out) -> list[ChannelSessionChanged]:
    return [f.data for f in out.facts if isinstance(f.data, ChannelSessionChanged)]


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("WORKING", "connected"),
        ("STARTING", "connecting"),
        ("SCAN_QR_CODE", "qr"),
        ("STOPPED", "disconnected"),
        ("FAILED", "disconnected"),
    ],
)
def test_waha_session_status_becomes_a_session_change(status: str, state: str) -> None:
    body = example("waha/examples/webhook_session_status.constructed.json")
    body["payload"]["status"] = status
    out = waha(body, ctx("waha"))
    [event] = sessions_of(out)
    assert (event.state, event.detail, event.session, event.channel_id) == (state, status, "default", CHANNEL)
    assert event.at == datetime.fromtimestamp(body["timestamp"] / 1000, UTC)


def test_a_waha_redelivery_has_the_same_key_and_a_new_change_another() -> None:
    body = example("waha/examples/webhook_session_status.constructed.json")
    first = waha(body, ctx("waha")).facts[0].key
    assert waha(body, ctx("waha")).facts[0].key == first
    body["id"] = "evt_other"
    assert waha(body, ctx("waha")).facts[0].key != first


def test_an_unknown_waha_session_status_is_unrecognised() -> None:
    body = example("waha/examples/webhook_session_status.constructed.json")
    body["payload"]["status"] = "DANCING"
    out = waha(body, ctx("waha"))
    assert not out.facts and not out.recognised


@pytest.mark.parametrize(
    ("state", "expected"), [("open", "connected"), ("connecting", "connecting"), ("close", "disconnected")]
)
def test_evolution_connection_update_becomes_a_session_change(state: str, expected: str) -> None:
    body = example("evolution-api/examples/webhook_connection_update_open.constructed.json")
    body["data"]["state"] = state
    [event] = sessions_of(evolution(body, ctx("evolution", None)))
    assert (event.state, event.session, event.channel_id) == (expected, "acme-sales", None)


def test_an_evolution_qr_code_means_waiting_for_a_scan() -> None:
    body = example("evolution-api/examples/webhook_qrcode_updated.constructed.json")
    [event] = sessions_of(evolution(body, ctx("evolution")))
    assert event.state == "qr"
    body["data"] = {"message": "QR code limit reached", "statusCode": 500}
    [event] = sessions_of(evolution(body, ctx("evolution")))
    assert event.state == "disconnected"


def test_refusals_of_a_dead_session_say_so() -> None:
    waha_down = classify_waha_error(422, {"statusCode": 422, "status": "SCAN_QR_CODE"}, session="sales")
    assert isinstance(waha_down, SessionDown) and waha_down.state == "qr"
    evo_down = classify_evolution_error(
        500,
        {
            "status": 500,
            "error": "Internal Server Error",
            "response": {"message": ["Error: Connection Closed"]},
        },
    )
    assert isinstance(evo_down, SessionDown) and evo_down.state == "disconnected"
    assert not isinstance(classify_evolution_error(500, {"status": 500, "error": "boom"}), SessionDown)


OURS = pause_text(CHANNEL, "qr", "SCAN_QR_CODE")


def test_a_session_going_down_pauses_a_running_channel_and_holds_the_pause() -> None:
    d = decide("qr", channel_paused=False, channel_reason=None, held=None, new_reason=OURS)
    assert (d.pause, d.hold, d.resume) == (OURS, OURS, False)


def test_a_session_coming_back_lifts_only_its_own_pause() -> None:
    assert decide("connected", channel_paused=True, channel_reason=OURS, held=OURS, new_reason="x").resume
    # an operator paused it meanwhile (their reason replaced ours): it stays paused
    d = decide(
        "connected", channel_paused=True, channel_reason="paused by an operator", held=OURS, new_reason="x"
    )
    assert not d.resume and d.hold is None


def test_a_session_going_down_leaves_an_operators_pause_alone() -> None:
    d = decide(
        "disconnected",
        channel_paused=True,
        channel_reason="paused by an operator",
        held=None,
        new_reason=OURS,
    )
    assert (d.pause, d.hold, d.resume) == (None, None, False)
