import io
import json
import logging

import structlog

from shared.logging import configure_logging, mask_sensitive


def test_processor_masks_phones_tokens_and_bodies_by_key_and_inside_strings():
    out = mask_sensitive(
        None,
        "info",
        {
            "event": "sending to +5511999998888",
            "to": "+5511999998888",
            "text": "your code is 1234",
            "access_token": "EAAG123",
            "error": "401 for Bearer abc.def.ghi calling 5511999998888",
            "nested": {"phone": "+351912345678", "count": 3},
            "count": 7,
        },
    )
    dumped = json.dumps(out)
    assert "999998888" not in dumped and "912345678" not in dumped
    assert "your code" not in dumped and "EAAG123" not in dumped and "abc.def.ghi" not in dumped
    assert out["to"] == "+***88"
    assert out["count"] == 7 and out["nested"]["count"] == 3


def test_configured_logging_emits_masked_json_for_structlog_and_stdlib():
    stream = io.StringIO()
    configure_logging("test", "INFO", "json")
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    structlog.get_logger("t").info("delivered", to="+5511999998888", message_id="m1")
    logging.getLogger("aio_pika.fake").warning("connection to +5511999998888 lost")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "delivered" and lines[0]["to"] == "+***88" and lines[0]["service"] == "test"
    assert "999998888" not in lines[1]["event"]
