"""One phone identity across services: a Brazilian mobile that WhatsApp reports without its
ninth digit (older accounts' wa_id) is the same person the sender is asked to message with it,
so an opt-out keyword or an inbound message (the 24-hour window) applies to both forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter

from services.ingest import normalise
from services.sender.app import Recipient
from shared.crypto import lookup_hash
from shared.events import ContactOptedOut, InboundReceived

#: Meta's own example, from the handbook beside the checkout (a reduced copy below when absent)
WEBHOOKS = Path(__file__).resolve().parents[2].parent / "shared" / "contracts" / "meta-webhooks"
OLD_WA_ID = "551187654321"  # as WhatsApp sends it: no ninth digit
KEY = "k" * 32
CONTRACT_FILE = WEBHOOKS / "meta-openapi__inbound_text.json"


def _webhook_from(wa_id: str, text: str) -> dict:
    if CONTRACT_FILE.exists():
        body = json.loads(CONTRACT_FILE.read_text())
    else:  # the handbook's copy of Meta's example, reduced to what matters here
        body = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "419561257915477",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": "1065",
                                },
                                "contacts": [{"profile": {"name": "A"}, "wa_id": wa_id}],
                                "messages": [
                                    {
                                        "from": wa_id,
                                        "id": "wamid.1",
                                        "timestamp": "1749416383",
                                        "type": "text",
                                        "text": {"body": text},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"][0]["wa_id"] = wa_id
    value["messages"][0]["from"] = wa_id
    value["messages"][0]["text"]["body"] = text
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
