"""Chatwoot webhooks: ``message_created`` (incoming messages and attachments),
``message_updated`` (outgoing statuses, ``input_select`` replies). Pure: no I/O."""

from __future__ import annotations

import re
from typing import Any

from services.ingest.normalise.common import (
    Context,
    Normalised,
    _dict,
    _inbound,
    _list,
    _phone,
    _Skip,
    _status,
    _str,
    _time,
)

CHATWOOT_IGNORED = {
    "conversation_created",
    "conversation_status_changed",
    "conversation_updated",
    "contact_created",
    "contact_updated",
    "webwidget_triggered",
    "conversation_typing_on",
    "conversation_typing_off",
    "inbox_created",
    "inbox_updated",
}
CHATWOOT_FILE_KINDS = {"image": "image", "audio": "audio", "video": "video", "file": "document"}
CHATWOOT_STATUSES = {"sent", "delivered", "read", "failed"}


def _chatwoot_phone(body: dict[str, Any]) -> str:
    conversation = _dict(body.get("conversation"))
    for raw in (
        _dict(body.get("sender")).get("phone_number"),
        _dict(_dict(conversation.get("meta")).get("sender")).get("phone_number"),
        re.sub(r"^\D+", "", str(_dict(conversation.get("contact_inbox")).get("source_id") or "")),
    ):
        if raw:
            return _phone(raw)
    raise _Skip("Chatwoot message with no contact phone number")


def chatwoot(body: Any, ctx: Context) -> Normalised:
    out = Normalised()
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        out.unknown("not a Chatwoot webhook (no event)")
        return out
    event = body["event"]
    try:
        if event in CHATWOOT_IGNORED:
            out.notes.append(f"{event}: nothing to publish")
        elif event == "message_created":
            _chatwoot_created(out, ctx, body)
        elif event == "message_updated":
            _chatwoot_updated(out, ctx, body)
        else:
            out.unknown(f"Chatwoot event {event!r} is not handled")
    except _Skip as exc:
        out.unknown(str(exc))
    return out


def _chatwoot_created(out: Normalised, ctx: Context, body: dict[str, Any]) -> None:
    if body.get("message_type") != "incoming" or body.get("private"):
        out.notes.append(f"{body.get('message_type')} message: not inbound")
        return
    mid = _str(body.get("id"))
    if not mid:
        raise _Skip("Chatwoot message without an id")
    base: dict[str, Any] = {
        "provider_message_id": mid,
        "from_phone": _chatwoot_phone(body),
        "received_at": _time(body.get("created_at"), ctx.now),
        "reply_to": _str(_dict(body.get("content_attributes")).get("in_reply_to")),
        "profile_name": _str(_dict(body.get("sender")).get("name")),
    }
    text = _str(body.get("content"))
    attachments = [a for a in _list(body.get("attachments")) if isinstance(a, dict)]
    if not attachments:
        _inbound(out, ctx, f"m:{mid}", kind="text", text=text, **base)
        return
    for index, attachment in enumerate(attachments):
        key = f"m:{mid}" if index == 0 else f"m:{mid}:{index}"
        file_type = _str(attachment.get("file_type"))
        caption = text if index == 0 else None
        if file_type in CHATWOOT_FILE_KINDS:
            kind = CHATWOOT_FILE_KINDS[file_type]
            info = {
                "kind": kind,
                "url": _str(attachment.get("data_url")),
                "mime_type": _str(attachment.get("content_type")),
                "size": attachment.get("file_size"),
            }
            info = {k: v for k, v in info.items() if v is not None}
            _inbound(
                out,
                ctx,
                key,
                download={"via": "url", "url": info.get("url")},
                kind=kind,
                text=caption,
                transcript=_str(attachment.get("transcribed_text")),
                media=info,
                **base,
            )
        elif file_type == "location":
            location = {
                "latitude": attachment.get("coordinates_lat"),
                "longitude": attachment.get("coordinates_long"),
            }
            _inbound(out, ctx, key, kind="location", location=location, text=caption, **base)
        elif file_type == "contact":
            _inbound(
                out, ctx, key, kind="contacts", contacts=[{"phone": attachment.get("fallback_title")}], **base
            )
        else:
            _inbound(out, ctx, key, kind="unsupported", text=caption, **base)


def _chatwoot_updated(out: Normalised, ctx: Context, body: dict[str, Any]) -> None:
    mid = _str(body.get("id"))
    if not mid:
        raise _Skip("Chatwoot message without an id")
    submitted = _list(_dict(body.get("content_attributes")).get("submitted_values"))
    if body.get("content_type") == "input_select" and submitted:
        choice = _dict(submitted[0])
        _inbound(
            out,
            ctx,
            f"m:{mid}:reply",
            provider_message_id=f"{mid}:reply",
            from_phone=_chatwoot_phone(body),
            received_at=ctx.now,
            kind="interactive",
            payload=_str(choice.get("value")),
            title=_str(choice.get("title")),
        )
        return
    if body.get("message_type") not in ("outgoing", "template"):
        out.notes.append("update of a message that is not outbound")
        return
    status = body.get("status")
    if status is None:
        for item in _list(_dict(body.get("conversation")).get("messages")):
            if str(_dict(item).get("id")) == mid:
                status = _dict(item).get("status")
    if status not in CHATWOOT_STATUSES:
        out.notes.append(f"message_updated with status {status!r}: nothing to publish")
        return
    error = _str(body.get("external_error") or _dict(body.get("content_attributes")).get("external_error"))
    _status(out, ctx, _str(body.get("source_id")) or mid, status, error_message=error, at=ctx.now)
