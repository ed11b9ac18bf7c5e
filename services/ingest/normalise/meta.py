"""Meta WhatsApp Cloud API webhooks (``object: whatsapp_business_account``): messages, statuses,
template status updates and marketing preferences. Pure: no I/O."""

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
from shared.events import ContactOptedIn, ContactOptedOut, TemplateStatusChanged

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
