"""One phone identity across services: a Brazilian mobile that WhatsApp reports without its
ninth digit (older accounts' wa_id) is the same person the sender is asked to message with it,
so an opt-out keyword or an inbound message (the 24-hour window) applies to both forms."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import TypeAdapter

from services.ingest import normalise
from services.sender.app import Recipient
from shared.crypto import lookup_hash
from shared.events import ContactOptedOut, InboundReceived
from tests.integration.ingest.test_events_and_media import meta_text

OLD_WA_ID = "551187654321"  # as WhatsApp sends it: no ninth digit
KEY = "k" * 32


def _webhook_from(wa_id: str, text: str) -> dict:
    """Meta's own example webhook (the handbook's contract), from ``wa_id``."""
    body = meta_text(text, "wamid.phone-identity", phone=wa_id)
    body["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"] = wa_id
    return body


def _facts(body: dict) -> list:
    ctx = normalise.Context(
        provider="meta", channel_id=None, keywords=normalise.DEFAULT_KEYWORDS, now=datetime.now(UTC)
    )
    return normalise.meta(body, ctx).facts


def test_an_inbound_message_without_the_ninth_digit_opens_the_window_of_the_nine_digit_number():
    facts = _facts(_webhook_from(OLD_WA_ID, "Hi, is my order ready?"))
    inbound = [f.data for f in facts if isinstance(f.data, InboundReceived)]
    assert [m.from_phone for m in inbound] == ["+5511987654321"]
    outbound = TypeAdapter(Recipient).validate_python("+5511987654321")
    assert lookup_hash(KEY, inbound[0].from_phone) == lookup_hash(KEY, outbound)


def test_stop_from_the_old_form_opts_out_the_number_the_sender_is_asked_to_message():
    facts = _facts(_webhook_from(OLD_WA_ID, "STOP"))
    opted = [f.data for f in facts if isinstance(f.data, ContactOptedOut)]
    assert [o.phone for o in opted] == ["+5511987654321"]
    for written in ("+5511987654321", "+551187654321", "+55 11 98765-4321"):
        assert lookup_hash(KEY, TypeAdapter(Recipient).validate_python(written)) == lookup_hash(
            KEY, opted[0].phone
        )
