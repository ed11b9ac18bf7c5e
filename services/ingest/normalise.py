"""Provider webhook bodies → Herald events. Pure: no I/O.

Each provider function takes the parsed JSON body and a ``Context`` and returns ``Normalised``:
the facts found (each with the dedupe key that identifies it at the provider), and whether the
whole body was understood. A body or a part of it that Herald does not understand is not an
error: the caller stores the body flagged ``unrecognised`` with the notes, and publishes the rest.

Dedupe keys (unique per tenant and provider): ``m:<message id>`` for a message,
``s:<message id>:<status>`` for a status, ``o:<message id>`` for an opt-out/in keyword in it,
``t:<template id>:<event>:<time>`` for a template status, ``p:<wa_id>:<value>:<time>`` for a
marketing preference.
"""

from __future__ import annotations

import functools
import re
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shared.events import (
    ContactOptedIn,
    ContactOptedOut,
    DeliveryStatus,
    EventData,
    InboundReceived,
    TemplateStatusChanged,
)
from shared.phone import InvalidPhoneNumber, normalize_e164

DEFAULT_OPT_OUT = ("STOP", "PARAR", "SAIR", "CANCELAR", "UNSUBSCRIBE")
DEFAULT_OPT_IN = ("START", "VOLTAR")
MEDIA_KINDS = frozenset({"image", "audio", "voice", "video", "document", "sticker"})


@dataclass(frozen=True)
class Keywords:
    opt_out: frozenset[str]
    opt_in: frozenset[str]

    @classmethod
    def of(cls, opt_out: list[str] | tuple[str, ...], opt_in: list[str] | tuple[str, ...]) -> Keywords:
        return cls(frozenset(keyword_form(w) for w in opt_out), frozenset(keyword_form(w) for w in opt_in))


def keyword_form(text: str) -> str:
    """A message matches a keyword when, trimmed of spaces and punctuation and case-folded, it is
    the keyword: "Stop!" opts out, "please don't stop" does not."""
    return text.strip().strip(string.punctuation + " ").casefold()


DEFAULT_KEYWORDS = Keywords.of(DEFAULT_OPT_OUT, DEFAULT_OPT_IN)


@dataclass(frozen=True)
class Context:
    provider: str
    channel_id: uuid.UUID | None
    keywords: Keywords
    now: datetime


@dataclass(frozen=True)
class Fact:
    key: str
    data: EventData
    phone: str | None = None
    #: how to fetch the message's media (``inbound.received`` is then published after download)
    media: dict[str, Any] | None = None


@dataclass
class Normalised:
    facts: list[Fact] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recognised: bool = True

    def unknown(self, note: str) -> None:
        self.recognised = False
        self.notes.append(note)


class _Skip(Exception):
    """A part of the body that cannot become an event; its message becomes a note."""


@functools.lru_cache(maxsize=65_536)
def _e164(digits: str) -> str | InvalidPhoneNumber:
    """libphonenumber parsing is the dearest step of normalising a message; senders repeat."""
    try:
        return normalize_e164(digits if digits.startswith("+") else "+" + digits)
    except InvalidPhoneNumber as exc:
        return exc


def _phone(raw: Any) -> str:
    digits = str(raw or "").split("@", 1)[0].split(":", 1)[0].strip()
    if not digits:
        raise _Skip("no sender phone number")
    result = _e164(digits[:40])
    if isinstance(result, InvalidPhoneNumber):
        raise _Skip(str(result))
    return result


def _phone_or_none(raw: Any) -> str | None:
    try:
        return _phone(raw)
    except _Skip:
        return None


def _time(raw: Any, now: datetime) -> datetime:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        if isinstance(raw, str):
            try:
                parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except ValueError:
                return now
        return now
    if value > 1e12:  # milliseconds
        value /= 1000
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return now


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text or None


def _inbound(
    out: Normalised, ctx: Context, key: str, *, download: dict[str, Any] | None = None, **fields: Any
) -> None:
    """Add an inbound.received fact, and a keyword opt-out/in when its text is one."""
    try:
        event = InboundReceived(provider=ctx.provider, channel_id=ctx.channel_id, **fields)
    except ValidationError as exc:
        raise _Skip(f"message {fields.get('provider_message_id')!r}: {exc.errors()[0]['msg']}") from None
    out.facts.append(Fact(key, event, event.from_phone, download if event.kind in MEDIA_KINDS else None))
    if event.kind == "text" and event.text:
        word = keyword_form(event.text)
        if word in ctx.keywords.opt_out:
            out.facts.append(
                Fact(
                    "o:" + key[2:],
                    ContactOptedOut(
                        phone=event.from_phone,
                        channel_id=ctx.channel_id,
                        reason=f"keyword {word.upper()}",
                        at=event.received_at,
                    ),
                    event.from_phone,
                )
            )
        elif word in ctx.keywords.opt_in:
            out.facts.append(
                Fact(
                    "o:" + key[2:],
                    ContactOptedIn(
                        phone=event.from_phone,
                        channel_id=ctx.channel_id,
                        reason=f"keyword {word.upper()}",
                        at=event.received_at,
                    ),
                    event.from_phone,
                )
            )


def _status(out: Normalised, ctx: Context, message_id: Any, status: str, **fields: Any) -> None:
    mid = _str(message_id)
    if not mid:
        raise _Skip("status without a message id")
    try:
        event = DeliveryStatus(
            provider=ctx.provider, provider_message_id=mid, status=status, channel_id=ctx.channel_id, **fields
        )
    except ValidationError as exc:
        raise _Skip(f"status of {mid!r}: {exc.errors()[0]['msg']}") from None
    out.facts.append(Fact(f"s:{mid}:{status}", event, event.recipient))


def _each(out: Normalised, items: list[Any], handle: Any, *args: Any) -> None:
    for item in items:
        try:
            if not isinstance(item, dict):
                raise _Skip(f"expected an object, got {type(item).__name__}")
            handle(out, *args, item)
        except _Skip as exc:
            out.unknown(str(exc))


# --- Meta -----------------------------------------------------------------------------------

META_STATUSES = {"sent", "delivered", "read", "played", "failed"}


def meta(body: Any, ctx: Context) -> Normalised:
    out = Normalised()
    if not isinstance(body, dict) or body.get("object") != "whatsapp_business_account":
        out.unknown("not a WhatsApp Business Account webhook (object != whatsapp_business_account)")
        return out
    entries = body.get("entry")
    if not isinstance(entries, list):
        out.unknown("no entry list")
        return out
    for entry in entries:
        entry = _dict(entry)
        for change in _list(entry.get("changes")):
            change = _dict(change)
            field_name = change.get("field")
            value = _dict(change.get("value"))
            if field_name == "messages":
                names = {
                    str(c.get("wa_id")): _dict(c.get("profile")).get("name")
                    for c in _list(value.get("contacts"))
                    if isinstance(c, dict)
                }
                _each(out, _list(value.get("messages")), _meta_message, ctx, names)
                _each(out, _list(value.get("statuses")), _meta_status, ctx)
                for error in _list(value.get("errors")):
                    out.notes.append(
                        f"provider error {_dict(error).get('code')}: {_dict(error).get('title')}"
                    )
                if not any(k in value for k in ("messages", "statuses", "errors")):
                    out.unknown("a messages change with no messages, statuses or errors")
            elif field_name == "message_template_status_update":
                try:
                    name = _str(value.get("message_template_name"))
                    event = _str(value.get("event"))
                    if not name or not event:
                        raise _Skip("template status update without message_template_name or event")
                    at = _time(entry.get("time"), ctx.now)
                    reason = _str(value.get("reason"))
                    out.facts.append(
                        Fact(
                            f"t:{value.get('message_template_id') or name}:{event}:{entry.get('time')}",
                            TemplateStatusChanged(
                                template_name=name,
                                language=_str(value.get("message_template_language")) or "",
                                status=event,
                                reason=None if reason in (None, "NONE") else reason,
                                at=at,
                            ),
                        )
                    )
                except _Skip as exc:
                    out.unknown(str(exc))
            elif field_name == "user_preferences":
                _each(out, _list(value.get("user_preferences")), _meta_preference, ctx)
            else:
                out.unknown(f"change field {field_name!r} is not handled")
    return out


def _meta_preference(out: Normalised, ctx: Context, pref: dict[str, Any]) -> None:
    phone = _phone(pref.get("wa_id"))
    choice = str(pref.get("value", "")).lower()
    at = _time(pref.get("timestamp"), ctx.now)
    key = f"p:{pref.get('wa_id')}:{choice}:{pref.get('timestamp')}"
    reason = f"{pref.get('category', 'marketing_messages')}: {pref.get('detail') or choice}"
    if choice == "stop":
        out.facts.append(
            Fact(key, ContactOptedOut(phone=phone, channel_id=ctx.channel_id, reason=reason, at=at), phone)
        )
    elif choice == "resume":
        out.facts.append(
            Fact(key, ContactOptedIn(phone=phone, channel_id=ctx.channel_id, reason=reason, at=at), phone)
        )
    else:
        raise _Skip(f"user preference value {choice!r} is not handled")


def _meta_message(out: Normalised, ctx: Context, names: dict[str, Any], msg: dict[str, Any]) -> None:
    mid = _str(msg.get("id"))
    kind = msg.get("type")
    if not mid:
        raise _Skip("message without an id")
    if kind == "system":
        out.notes.append(f"system message {_dict(msg.get('system')).get('type')}")
        return
    phone = _phone(msg.get("from"))
    fields: dict[str, Any] = {
        "provider_message_id": mid,
        "from_phone": phone,
        "received_at": _time(msg.get("timestamp"), ctx.now),
        "reply_to": _str(_dict(msg.get("context")).get("id")),
        "profile_name": _str(names.get(str(msg.get("from")))),
    }
    media = None
    part = _dict(msg.get(kind)) if isinstance(kind, str) else {}
    if kind == "text":
        fields.update(kind="text", text=_str(part.get("body")))
    elif kind in ("image", "video", "sticker", "document", "audio"):
        media_kind = "voice" if kind == "audio" and part.get("voice") else kind
        info = {
            "kind": media_kind,
            "id": _str(part.get("id")),
            "url": _str(part.get("url")),
            "mime_type": _str(part.get("mime_type")),
            "sha256": _str(part.get("sha256")),
            "filename": _str(part.get("filename")),
        }
        info = {k: v for k, v in info.items() if v is not None}
        fields.update(kind=media_kind, text=_str(part.get("caption")), media=info)
        media = {"via": "meta", "id": info.get("id"), "url": info.get("url")}
    elif kind == "interactive" and part:
        reply = _dict(part.get(part.get("type"))) if isinstance(part.get("type"), str) else {}
        fields.update(kind="interactive", payload=_str(reply.get("id")), title=_str(reply.get("title")))
    elif kind == "button":
        fields.update(
            kind="button",
            payload=_str(part.get("payload")),
            title=_str(part.get("text")),
            text=_str(part.get("text")),
        )
    elif kind == "reaction":
        fields.update(
            kind="reaction",
            reaction={"message_id": part.get("message_id"), "emoji": part.get("emoji") or None},
        )
    elif kind == "location":
        fields.update(kind="location", location=part)
    elif kind == "contacts":
        fields.update(
            kind="contacts", contacts=[c for c in _list(msg.get("contacts")) if isinstance(c, dict)]
        )
    else:
        fields.update(kind="unsupported")
        errors = _list(msg.get("errors"))
        if errors:
            out.notes.append(f"message {mid}: {kind} with error {_dict(errors[0]).get('code')}")
    _inbound(out, ctx, f"m:{mid}", download=media, **fields)


def _meta_status(out: Normalised, ctx: Context, item: dict[str, Any]) -> None:
    status = str(item.get("status", ""))
    if status not in META_STATUSES:
        raise _Skip(f"status {status!r} is not handled")
    error = _dict((_list(item.get("errors")) or [{}])[0])
    details = _dict(error.get("error_data")).get("details")
    message = " — ".join(str(x) for x in (error.get("title") or error.get("message"), details) if x) or None
    _status(
        out,
        ctx,
        item.get("id"),
        status,
        recipient=_phone_or_none(item.get("recipient_id")),
        error_code=_str(error.get("code")),
        error_message=message,
        at=_time(item.get("timestamp"), ctx.now),
    )


# --- Chatwoot -------------------------------------------------------------------------------

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


# --- Evolution API --------------------------------------------------------------------------

EVOLUTION_IGNORED = {
    "connection.update",
    "qrcode.updated",
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
    elif event in EVOLUTION_IGNORED:
        out.notes.append(f"{event}: nothing to publish")
    else:
        out.unknown(f"Evolution event {body['event']!r} is not handled")
    return out


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


# --- WAHA -----------------------------------------------------------------------------------

WAHA_ACKS = {-1: "failed", 1: "sent", 2: "delivered", 3: "read", 4: "played"}
WAHA_IGNORED = {
    "session.status",
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
        elif event in WAHA_IGNORED:
            out.notes.append(f"{event}: nothing to publish")
        else:
            out.unknown(f"WAHA event {event!r} is not handled")
    except _Skip as exc:
        out.unknown(str(exc))
    return out


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


NORMALISERS = {"meta": meta, "chatwoot": chatwoot, "evolution": evolution, "waha": waha}
