"""The minimal notification policy for inbound messages. Pure: no I/O.

Every inbound message from a mapped user is one of

- a **note** (not an order, and no open question it answers): stored silently, nothing is sent;
- an **order**, or the **answer** to an open clarification: while a required field is missing
  (the platform; the topic when neither the order nor the profile gives one), exactly one
  question goes out as quick replies (buttons for up to 3 choices, a list for more); when
  nothing is missing the order runs as a content job;
- an answer that matches no choice: the question once more, then the context is dropped with
  one short message.

``decide`` turns (message, open context, profile, now) into one ``Decision``; the handler
(``inbound.py``) carries it out in one transaction with its outbox rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.pipeline import domain, orders
from services.pipeline.orders import Choice
from shared.events import ButtonsContent, ListContent, ListRow, ListSection, ReplyButton

PLATFORM_TITLES = {"linkedin": "LinkedIn", "instagram": "Instagram", "x": "X (Twitter)", "blog": "Blog"}
#: most buttons a WhatsApp interactive message carries; more choices go in a list
MAX_BUTTONS = 3
MAX_LIST_ROWS = 10

_QUESTIONS = {
    "en": {
        "platform": "Which platform is this post for?",
        "topic": "What should the post be about? Pick one or write it in your own words.",
        "again": "Sorry, I didn't get that. ",
        "choose": "Choose",
        "dropped": "I couldn't match that answer, so I dropped the order. Send it again whenever you like.",
        "no_notes": "I couldn't write the post: there are no notes to write from yet. "
        "Send me a few notes about the topic, then ask again.",
        "failed": "I couldn't write the post right now: the writing service is unavailable. "
        "Please ask again in a few minutes.",
    },
    "pt_BR": {
        "platform": "Para qual rede é este post?",
        "topic": "Sobre o que deve ser o post? Escolha um ou escreva com suas palavras.",
        "again": "Desculpe, não entendi. ",
        "choose": "Escolher",
        "dropped": "Não entendi a resposta, então cancelei o pedido. Envie de novo quando quiser.",
        "no_notes": "Não consegui escrever o post: ainda não há notas para usar. "
        "Envie algumas notas sobre o assunto e peça de novo.",
        "failed": "Não consegui escrever o post agora: o serviço de escrita está indisponível. "
        "Peça de novo em alguns minutos.",
    },
}


def words(language: str) -> dict[str, str]:
    return _QUESTIONS.get(language, _QUESTIONS["en"])


@dataclass(frozen=True)
class Reply:
    """What the user sent, as far as the policy cares."""

    ref: str  # "<provider>:<provider message id>": one inbound message, one decision
    text: str | None
    payload: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Context:
    """An open clarification: the field asked, what is known, the choices offered."""

    field: str
    known: dict[str, str]
    choices: list[Choice]
    language: str
    attempts: int
    order_ref: str
    expires_at: datetime


@dataclass(frozen=True)
class Profile:
    language: str = "en"
    platforms: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Note:
    """Not an order and no answer: store it silently. ``drop_context``: an expired one."""

    drop_context: bool = False


@dataclass(frozen=True)
class Ask:
    context: Context
    again: bool = False


@dataclass(frozen=True)
class GiveUp:
    language: str


@dataclass(frozen=True)
class Run:
    fields: dict[str, str]
    order_ref: str
    language: str


Decision = Note | Ask | GiveUp | Run


def platform_choices(profile: Profile) -> list[Choice]:
    """The profile's platforms when it names two or more, else all four."""
    values = list(profile.platforms) if len(profile.platforms) >= 2 else list(PLATFORM_TITLES)
    return [Choice(f"platform:{v}", PLATFORM_TITLES.get(v, v)[:20], v) for v in values]


def topic_choices(keywords: list[str]) -> list[Choice]:
    return [Choice(f"topic:{k}"[:200], k[:20], k) for k in keywords[:MAX_LIST_ROWS]]


def next_step(
    known: dict[str, str],
    *,
    order_ref: str,
    language: str,
    profile: Profile,
    keywords: list[str],
    now: datetime,
) -> Ask | Run:
    """Ask the first required field still missing, else run the order."""
    expires = domain.context_expires_at(now)
    if "platform" not in known:
        choices = platform_choices(profile)
        return Ask(Context("platform", known, choices, language, 1, order_ref, expires))
    if "topic" not in known and not profile.topics and keywords:
        return Ask(Context("topic", known, topic_choices(keywords), language, 1, order_ref, expires))
    return Run(known, order_ref, language)


def answer_value(ctx: Context, reply: Reply) -> str | None:
    """The value the reply gives the asked field; a topic may also be the user's own words."""
    choice = orders.match_answer(ctx.choices, payload=reply.payload, text=reply.text, field=ctx.field)
    if choice is not None:
        return choice.value
    if ctx.field == "topic" and reply.text and not reply.text.strip().isdigit():
        own = " ".join(reply.text.split())
        return own if 0 < len(own) <= 120 else None
    return None


def decide(
    reply: Reply,
    ctx: Context | None,
    profile: Profile | None,
    keywords: list[str],
    now: datetime,
    order: orders.Order | None = None,
) -> Decision:
    """One inbound message of a mapped user → what to do. ``keywords``: of the user's recent
    notes, offered as topics when neither order nor profile has one. ``order``: the message as
    the model read it, when one is configured; else the rule-based parser reads it."""
    profile = profile or Profile()
    expired = ctx is not None and domain.is_expired(ctx.expires_at, now)
    open_ctx = None if expired else ctx
    if order is None:
        order = orders.parse_order(reply.text or "", None)
    if order is not None:
        language = profile.language if profile.language in _QUESTIONS else order.language
        return next_step(
            order.fields(),
            order_ref=reply.ref,
            language=language,
            profile=profile,
            keywords=keywords,
            now=now,
        )
    if open_ctx is None:
        return Note(drop_context=expired)
    value = answer_value(open_ctx, reply)
    if value is not None:
        return next_step(
            open_ctx.known | {open_ctx.field: value},
            order_ref=open_ctx.order_ref,
            language=open_ctx.language,
            profile=profile,
            keywords=keywords,
            now=now,
        )
    if domain.may_ask_again(open_ctx.attempts):
        again = Context(
            open_ctx.field,
            open_ctx.known,
            open_ctx.choices,
            open_ctx.language,
            open_ctx.attempts + 1,
            open_ctx.order_ref,
            domain.context_expires_at(now),
        )
        return Ask(again, again=True)
    return GiveUp(open_ctx.language)


def question(ask: Ask) -> ButtonsContent | ListContent:
    """The clarification as quick replies, in the user's language."""
    ctx = ask.context
    w = words(ctx.language)
    body = (w["again"] if ask.again else "") + w[ctx.field]
    if len(ctx.choices) <= MAX_BUTTONS:
        return ButtonsContent(body=body, buttons=[ReplyButton(id=c.id, title=c.title) for c in ctx.choices])
    rows = [ListRow(id=c.id, title=c.title[:24]) for c in ctx.choices[:MAX_LIST_ROWS]]
    return ListContent(body=body, button=w["choose"], sections=[ListSection(rows=rows)])


def failure_text(language: str, error: str | None) -> str:
    """The one message when an order cannot be carried out: what happened, what to do."""
    w = words(language)
    return w["no_notes"] if error and "no notes" in error else w["failed"]
