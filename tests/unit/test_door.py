import asyncio
import json
from typing import Any

from shared.door import DoorGuard, is_json_content_type, json_depth_exceeds


def test_depth_64_passes_65_fails() -> None:
    assert not json_depth_exceeds(b"[" * 64 + b"]" * 64, 64)
    assert json_depth_exceeds(b"[" * 65 + b"]" * 65, 64)
    assert not json_depth_exceeds(b'{"a":' * 64 + b"1" + b"}" * 64, 64)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"text": "[" * 1000 + "{" * 1000}).encode()
    assert not json_depth_exceeds(body, 2)


def test_escaped_quotes_keep_the_string_open() -> None:
    body = json.dumps({"text": 'a \\" [[[[ \\\\" ' + '\\"' + "[[[["}).encode()
    assert not json_depth_exceeds(body, 1)
    # an escaped backslash ends right before the closing quote: brackets after it count
    assert json_depth_exceeds(b'["\\\\", [[1]]]', 2)


def test_deep_nesting_does_not_recurse() -> None:
    assert json_depth_exceeds(b"[" * 100_000, 64)


def test_json_content_types() -> None:
    assert is_json_content_type("application/json; charset=utf-8")
    assert is_json_content_type("application/cloudevents+json")
    assert is_json_content_type("")
    assert not is_json_content_type("application/x-www-form-urlencoded")


def _call(
    body: bytes, headers: list[tuple[bytes, bytes]], limit: int = 1024
) -> tuple[int, dict[str, Any], bytes]:
    seen: dict[str, bytes] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        msg = await receive()
        seen["body"] = msg["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = [body[i : i + 100] for i in range(0, len(body), 100)] or [b""]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(DoorGuard(app, max_body_bytes=limit)(scope, receive, send))
    status = sent[0]["status"]
    payload = sent[1]["body"]
    return status, (json.loads(payload) if status != 200 else {}), seen.get("body", b"")


def test_guard_rejects_and_replays() -> None:
    status, err, _ = _call(b"x", [(b"content-length", b"5000")])
    assert status == 413 and "send less or split the batch" in err["message"]
    status, err, _ = _call(b"[" * 2000, [(b"transfer-encoding", b"chunked")])
    assert status == 413
    status, err, _ = _call(b'{"a": "\xff"}', [(b"content-length", b"11")])
    assert status == 400 and "not valid UTF-8" in err["message"]
    status, err, _ = _call(b"[" * 65 + b"]" * 65, [(b"content-length", b"130")])
    assert status == 400 and "nested deeper than 64 levels" in err["message"]
    status, _, seen = _call(b"\xff", [(b"content-length", b"1"), (b"content-type", b"text/plain")])
    assert status == 200 and seen == b"\xff"
    body = b'{"ok": [1, 2, 3]}' * 10
    status, _, seen = _call(body, [(b"content-length", str(len(body)).encode())])
    assert status == 200 and seen == body
