"""WAHA webhooks: ``message``/``message.any``, ``message.ack``, ``message.reaction`` and
``session.status`` (→ ``channel.session_changed``). Pure: no I/O."""

from __future__ import annotations

from typing import Any

from services.ingest.normalise.common import (
    Context,
    Fact,
    Normalised,
    _dict,
    _inbound,
    _list,
    _phone,
    _phone_or_none,
    _Skip,
    _status,
    _str,
    _time,
)
from shared.events import ChannelSessionChanged

WAHA_ACKS = {-1: "failed", 1: "sent", 2: "delivered", 3: "read", 4: "played"}
#: WAHA session status → Herald's session state (passkey prompts need someone at the phone too)
WAHA_SESSION_STATES = {
    "WORKING": "connected",
    "STARTING": "connecting",
    "SCAN_QR_CODE": "qr",
    "PASSKEY_REQUIRED": "qr",
    "PASSKEY_CONFIRMATION_REQUIRED": "qr",
    "STOPPED": "disconnected",
    "FAILED": "disconnected",
}
WAHA_IGNORED = {
    "message.revoked",
    "message.edited",
    "presence.update",
    "poll.vote",
    "poll.vote.failed",
    "chat.archive",
    "group.join",
    "group.leave",
    "label.upsert",
    "label.deleted",
    "label.chat.added",
    "label.chat.deleted",
    "call.received",
    "call.accepted",
    "call.rejected",
    "engine.event",
    "state.change",
    "message.ack.group",
    "group.v2.join",
    "group.v2.leave",
    "group.v2.update",
    "group.v2.participants",
}


def waha(body: Any, ctx: Context) -> Normalised:
    out = Normalised()
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        out.unknown("not a WAHA webhook (no event)")
        return out
    event = body["event"]
    payload = body.get("payload")
    try:
        if event in ("message", "message.any"):
            if not isinstance(payload, dict):
                raise _Skip("message event without a payload object")
            _waha_message(out, ctx, str(body.get("session") or ""), payload)
        elif event == "message.ack":
            if not isinstance(payload, dict):
                raise _Skip("message.ack event without a payload object")
            _waha_ack(out, ctx, payload)
        elif event == "message.reaction":
            if not isinstance(payload, dict):
                raise _Skip("message.reaction without a payload object")
            if payload.get("fromMe") is True:
                return out
            reaction = _dict(payload.get("reaction"))
            _inbound(
                out,
                ctx,
                f"m:{payload.get('id')}",
                provider_message_id=str(payload.get("id")),
                from_phone=_waha_phone(payload.get("from")),
                received_at=_time(payload.get("timestamp"), ctx.now),
                kind="reaction",
                reaction={"message_id": reaction.get("messageId"), "emoji": reaction.get("text") or None},
            )
        elif event == "session.status":
            _waha_session(out, ctx, body, _dict(payload))
        elif event in WAHA_IGNORED:
            out.notes.append(f"{event}: nothing to publish")
        else:
            out.unknown(f"WAHA event {event!r} is not handled")
    except _Skip as exc:
        out.unknown(str(exc))
    return out


def _waha_session(out: Normalised, ctx: Context, body: dict[str, Any], payload: dict[str, Any]) -> None:
    raw = str(payload.get("status") or "").upper()
    state = WAHA_SESSION_STATES.get(raw)
    if state is None:
        raise _Skip(f"WAHA session status {raw or None!r} is not handled")
    session = _str(body.get("session")) or "default"
    at = _time(body.get("timestamp"), ctx.now) if body.get("timestamp") is not None else ctx.now
    event = ChannelSessionChanged(
        provider=ctx.provider, channel_id=ctx.channel_id, session=session, state=state, detail=raw, at=at
    )
    # a redelivery carries the same id (or timestamp); a new change of the session has a new one
    out.facts.append(Fact(f"c:{session}:{raw}:{body.get('id') or at.isoformat()}", event))


def _waha_phone(raw: Any) -> str:
    jid = str(raw or "")
    if jid.endswith("@lid"):
        raise _Skip("@lid sender without a phone number")
    return _phone(jid)


def _waha_message(out: Normalised, ctx: Context, session: str, payload: dict[str, Any]) -> None:
    if payload.get("fromMe") is True:
        out.notes.append("own message echo")
        return
    sender = str(payload.get("from") or "")
    if sender.endswith("@g.us") or sender == "status@broadcast" or sender.endswith("@newsletter"):
        out.notes.append("group or status message: not handled")
        return
    mid = _str(payload.get("id"))
    if not mid:
        raise _Skip("WAHA message without an id")
    reply = payload.get("replyTo")
    base: dict[str, Any] = {
        "provider_message_id": mid,
        "from_phone": _waha_phone(sender),
        "received_at": _time(payload.get("timestamp"), ctx.now),
        "reply_to": _str(_dict(reply).get("id")) if isinstance(reply, dict) else _str(reply),
        "profile_name": _str(
            _dict(payload.get("_data")).get("pushName") or _dict(payload.get("_data")).get("notifyName")
        ),
    }
    media_part = _dict(payload.get("media"))
    location = payload.get("location")
    vcards = [v for v in _list(payload.get("vCards")) if v]
    media = None
    if payload.get("hasMedia") and media_part:
        mime = str(media_part.get("mimetype") or "")
        major = mime.split("/", 1)[0]
        kind = {"image": "image", "video": "video", "audio": "audio"}.get(major, "document")
        if kind == "audio" and ("opus" in mime or mime.startswith("audio/ogg")):
            kind = "voice"  # WhatsApp voice notes are Ogg/Opus; plain audio files keep "audio"
        info = {
            k: v
            for k, v in {
                "kind": kind,
                "url": _str(media_part.get("url")),
                "mime_type": mime or None,
                "filename": _str(media_part.get("filename")),
            }.items()
            if v is not None
        }
        fields: dict[str, Any] = {"kind": kind, "text": _str(payload.get("body")), "media": info}
        media = {"via": "waha", "url": info.get("url")}
    elif isinstance(location, dict):
        fields = {"kind": "location", "location": location}
    elif vcards:
        fields = {"kind": "contacts", "contacts": [{"vcard": v} for v in vcards]}
    else:
        fields = {"kind": "text", "text": _str(payload.get("body"))}
    _inbound(out, ctx, f"m:{mid}", download=media, **base, **fields)


def _waha_ack(out: Normalised, ctx: Context, payload: dict[str, Any]) -> None:
    if payload.get("fromMe") is False:
        out.notes.append("ack of an inbound message")
        return
    ack = payload.get("ack")
    if ack == 0:
        out.notes.append("ack PENDING: nothing to publish")
        return
    status = WAHA_ACKS.get(ack) if isinstance(ack, int) else None
    if status is None:
        raise _Skip(f"WAHA ack {ack!r} is not handled")
    error = _str(_dict(payload.get("_data")).get("error"))
    _status(
        out,
        ctx,
        payload.get("id"),
        status,
        recipient=_phone_or_none(payload.get("from")),
        error_message=error,
        at=ctx.now,
    )
