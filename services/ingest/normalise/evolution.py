"""Evolution API webhooks: ``messages.upsert`` (every message kind, ``@lid`` resolved through
``remoteJidAlt``), ``messages.update`` (statuses, v1 and v2 shapes), and ``connection.update`` /
``qrcode.updated`` (→ ``channel.session_changed``). Pure: no I/O."""

from __future__ import annotations

from typing import Any

from services.ingest.normalise.common import (
    Context,
    Fact,
    Normalised,
    _dict,
    _each,
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

#: Baileys connection state → Herald's session state ("refused": the QR retry limit was reached)
EVOLUTION_SESSION_STATES = {
    "open": "connected",
    "connecting": "connecting",
    "close": "disconnected",
    "refused": "disconnected",
}
EVOLUTION_IGNORED = {
    "send.message",
    "messages.set",
    "messages.delete",
    "contacts.set",
    "contacts.upsert",
    "contacts.update",
    "chats.set",
    "chats.upsert",
    "chats.update",
    "chats.delete",
    "presence.update",
    "groups.upsert",
    "groups.update",
    "group-participants.update",
    "application.startup",
    "call",
    "labels.edit",
    "labels.association",
    "logout.instance",
    "remove.instance",
    "status.instance",
    "typebot.start",
    "typebot.change-status",
}
EVOLUTION_STATUSES = {
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "played",
    "ERROR": "failed",
}
EVOLUTION_MEDIA = {
    "imageMessage": "image",
    "videoMessage": "video",
    "documentMessage": "document",
    "documentWithCaptionMessage": "document",
    "audioMessage": "audio",
    "stickerMessage": "sticker",
}


def evolution(body: Any, ctx: Context) -> Normalised:
    out = Normalised()
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        out.unknown("not an Evolution API webhook (no event)")
        return out
    event = body["event"].lower().replace("_", ".")
    data = body.get("data")
    items = data if isinstance(data, list) else [data]
    if event == "messages.upsert":
        _each(out, items, _evolution_message, ctx, body)
    elif event == "messages.update":
        _each(out, items, _evolution_update, ctx)
    elif event in ("connection.update", "qrcode.updated"):
        try:
            _evolution_session(out, ctx, body, event, _dict(data))
        except _Skip as exc:
            out.unknown(str(exc))
    elif event in EVOLUTION_IGNORED:
        out.notes.append(f"{event}: nothing to publish")
    else:
        out.unknown(f"Evolution event {body['event']!r} is not handled")
    return out


def _evolution_session(
    out: Normalised, ctx: Context, envelope: dict[str, Any], event: str, data: dict[str, Any]
) -> None:
    instance = _str(envelope.get("instance")) or _str(data.get("instance"))
    if not instance:
        raise _Skip(f"{event} without an instance name")
    if event == "qrcode.updated":
        # a new QR code to scan; without one the QR retry limit was reached ({message, statusCode})
        raw = "qrcode" if isinstance(data.get("qrcode"), dict) else "qrcode_limit"
        state = "qr" if raw == "qrcode" else "disconnected"
    else:
        raw = str(data.get("state") or "").lower()
        found = EVOLUTION_SESSION_STATES.get(raw)
        if found is None:
            raise _Skip(f"Evolution connection state {raw or None!r} is not handled")
        state = found
        if data.get("statusReason") is not None:
            raw = f"{raw} ({data['statusReason']})"
    detail = raw
    event_data = ChannelSessionChanged(
        provider=ctx.provider,
        channel_id=ctx.channel_id,
        session=instance,
        state=state,
        detail=detail,
        at=ctx.now,
    )
    # date_time is when Evolution sent it: a redelivery repeats it, a new change has another
    stamp = _str(envelope.get("date_time")) or ctx.now.isoformat()
    out.facts.append(Fact(f"c:{instance}:{detail}:{stamp}", event_data))


def _evolution_message(out: Normalised, ctx: Context, envelope: dict[str, Any], data: dict[str, Any]) -> None:
    key = _dict(data.get("key"))
    jid = str(key.get("remoteJid") or "")
    if key.get("fromMe") is True:
        out.notes.append("own message echo")
        return
    if jid == "status@broadcast" or jid.endswith("@g.us") or jid.endswith("@newsletter"):
        out.notes.append("status or group message: not handled")
        return
    mid = _str(key.get("id"))
    if not mid:
        raise _Skip("Evolution message without key.id")
    if jid.endswith("@lid"):
        alt = key.get("remoteJidAlt") or key.get("senderPn")
        if not alt:
            raise _Skip(f"message {mid}: @lid address without remoteJidAlt, the phone number is unknown")
        jid = str(alt)
    message = _dict(data.get("message"))
    base: dict[str, Any] = {
        "provider_message_id": mid,
        "from_phone": _phone(jid),
        "received_at": _time(data.get("messageTimestamp"), ctx.now),
        "profile_name": _str(data.get("pushName")),
    }
    context = _dict(data.get("contextInfo"))
    for part in message.values():
        if isinstance(part, dict) and isinstance(part.get("contextInfo"), dict):
            context = context or part["contextInfo"]
    base["reply_to"] = _str(context.get("stanzaId"))
    media = None
    if "conversation" in message or "extendedTextMessage" in message:
        fields = {
            "kind": "text",
            "text": _str(message.get("conversation"))
            or _str(_dict(message.get("extendedTextMessage")).get("text")),
        }
    elif any(k in message for k in EVOLUTION_MEDIA):
        name = next(k for k in EVOLUTION_MEDIA if k in message)
        part = _dict(message[name])
        if name == "documentWithCaptionMessage":
            part = _dict(_dict(part.get("message")).get("documentMessage")) or part
        kind = EVOLUTION_MEDIA[name]
        if kind == "audio" and part.get("ptt"):
            kind = "voice"
        info = {
            "kind": kind,
            "url": _str(message.get("mediaUrl")) or _str(part.get("url")),
            "mime_type": _str(part.get("mimetype")),
            "filename": _str(part.get("fileName")),
            "seconds": part.get("seconds"),
        }
        info = {k: v for k, v in info.items() if v is not None}
        fields = {"kind": kind, "text": _str(part.get("caption")), "media": info}
        media = {
            "via": "evolution",
            "base64": message.get("base64") if isinstance(message.get("base64"), str) else None,
            "media_url": _str(message.get("mediaUrl")),
            "server_url": _str(envelope.get("server_url")),
            "instance": _str(envelope.get("instance")),
            "key": key,
        }
    elif "locationMessage" in message:
        loc = _dict(message["locationMessage"])
        fields = {
            "kind": "location",
            "location": {
                "latitude": loc.get("degreesLatitude"),
                "longitude": loc.get("degreesLongitude"),
                "name": loc.get("name"),
                "address": loc.get("address"),
            },
        }
    elif "contactMessage" in message or "contactsArrayMessage" in message:
        cards = (
            [_dict(message.get("contactMessage"))]
            if "contactMessage" in message
            else _list(_dict(message["contactsArrayMessage"]).get("contacts"))
        )
        fields = {
            "kind": "contacts",
            "contacts": [
                {"name": _dict(c).get("displayName"), "vcard": _dict(c).get("vcard")} for c in cards
            ],
        }
    elif "reactionMessage" in message:
        reaction = _dict(message["reactionMessage"])
        fields = {
            "kind": "reaction",
            "reaction": {
                "message_id": _dict(reaction.get("key")).get("id"),
                "emoji": reaction.get("text") or None,
            },
        }
    elif "buttonsResponseMessage" in message:
        reply = _dict(message["buttonsResponseMessage"])
        fields = {
            "kind": "interactive",
            "payload": _str(reply.get("selectedButtonId")),
            "title": _str(reply.get("selectedDisplayText")),
        }
    elif "listResponseMessage" in message:
        reply = _dict(message["listResponseMessage"])
        fields = {
            "kind": "interactive",
            "payload": _str(_dict(reply.get("singleSelectReply")).get("selectedRowId")),
            "title": _str(reply.get("title")),
        }
    elif "templateButtonReplyMessage" in message:
        reply = _dict(message["templateButtonReplyMessage"])
        fields = {
            "kind": "button",
            "payload": _str(reply.get("selectedId")),
            "title": _str(reply.get("selectedDisplayText")),
        }
    else:
        fields = {"kind": "unsupported"}
        out.notes.append(f"message {mid}: type {data.get('messageType')!r} published as unsupported")
    _inbound(out, ctx, f"m:{mid}", download=media, **base, **fields)


def _evolution_update(out: Normalised, ctx: Context, data: dict[str, Any]) -> None:
    if "update" in data and "key" in data:  # v1 shape: {key, update{status}}
        data = {
            **_dict(data.get("key")),
            "keyId": _dict(data.get("key")).get("id"),
            **_dict(data.get("update")),
        }
    if data.get("fromMe") is False:
        out.notes.append("status of an inbound message")
        return
    raw = str(data.get("status", "")).upper()
    if raw in ("PENDING", "DELETED"):
        out.notes.append(f"status {raw}: nothing to publish")
        return
    status = EVOLUTION_STATUSES.get(raw)
    if status is None:
        raise _Skip(f"Evolution status {raw!r} is not handled")
    _status(out, ctx, data.get("keyId"), status, recipient=_phone_or_none(data.get("remoteJid")), at=ctx.now)
