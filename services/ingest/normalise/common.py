"""What every provider's normaliser shares: the result types (``Context``, ``Fact``,
``Normalised``), opt-out keywords, and the tolerant readers of untrusted JSON (``_dict``,
``_list``, ``_str``, ``_time``, ``_phone``) with the two builders of facts (``_inbound`` adds a
message and the keyword opt-out/in it may be; ``_status`` a delivery status).

The underscore names are private to this package: the provider modules use them, nothing else.
A part of a body that cannot become an event raises ``_Skip``; ``_each`` turns that into a note.
"""

from __future__ import annotations

import functools
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shared.events import ContactOptedIn, ContactOptedOut, DeliveryStatus, EventData, InboundReceived
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
