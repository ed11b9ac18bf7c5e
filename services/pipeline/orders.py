"""Orders in a user's WhatsApp words, rule-based, in Portuguese and English. Pure functions.

An **order** asks for a post ("write me a LinkedIn post about our new menu", "escreve um post
curto sobre o cardápio"): a request verb and a kind of post. Anything else is a note. From an
order we read what it says of the platform, length, tone and topic; what it does not say is
``None`` (the conversation asks for what is required, the profile fills the rest).

An **answer** to a clarification is matched against the choices that were offered: by the
button/list reply id, by the number of a choice (gateways without interactive messages send the
choices as numbered text), by the title or a word that means it, or by a close spelling.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import asdict, dataclass

#: words that name each value, accent-free and lower-case (see ``normalize``)
PLATFORM_WORDS: dict[str, tuple[str, ...]] = {
    "linkedin": ("linkedin", "linked in", "lnkd"),
    "instagram": ("instagram", "insta", "ig", "reels"),
    "x": ("x", "twitter", "tweet", "tuite", "tweetar", "tuitar", "thread"),
    "blog": ("blog", "blogpost", "artigo", "article", "site"),
}
LENGTH_WORDS: dict[str, tuple[str, ...]] = {
    "short": ("short", "brief", "quick", "curto", "curta", "curtinho", "pequeno", "pequena", "rapido"),
    "medium": ("medium", "medio", "media", "normal"),
    "long": ("long", "longo", "longa", "detailed", "detalhado", "detalhada", "grande", "extenso"),
}
TONE_WORDS: dict[str, tuple[str, ...]] = {
    "professional": ("professional", "formal", "profissional", "serio", "serious"),
    "casual": ("casual", "informal", "descontraido", "descontraida", "relaxed", "leve"),
    "friendly": ("friendly", "warm", "amigavel", "simpatico", "simpatica", "caloroso", "acolhedor"),
    "authoritative": ("authoritative", "assertive", "autoritativo", "assertivo", "confiante", "expert"),
}
FIELD_WORDS = {"platform": PLATFORM_WORDS, "length": LENGTH_WORDS, "tone": TONE_WORDS}

_VERBS_EN = r"write|draft|create|make|compose|prepare|generate|give me"
_VERBS_PT = (
    r"escreve|escreva|escrever|cria|crie|criar|faz|faca|fazer|prepara|prepare|preparar|"
    r"redige|redija|redigir|gera|gere|gerar|monta|monte|manda|mande|quero|preciso"
)
_KINDS = (
    r"post|posts|postagem|postagens|publicacao|tweet|tuite|thread|article|artigo|caption|legenda|"
    r"texto|blogpost|blog post"
)
#: a request verb among the first words ("please write…", "pode escrever…"), then a kind of post
_POLITE = (
    r"please|pls|can|could|would|will|you|u|hey|hi|oi|ola|pode|podes|poderia|voce|vc|por|favor|me|herald"
)
_ORDER = re.compile(rf"^(?:(?:{_POLITE}) ){{0,4}}({_VERBS_EN}|{_VERBS_PT})\b.*?\b({_KINDS})\b")
_PT_HINT = re.compile(rf"\b({_VERBS_PT}|sobre|um|uma|para|pro|pra|no|na|com|tom)\b")
#: what introduces the topic (strong markers first; "on" only when no strong marker is there)
_TOPIC_STRONG = re.compile(r"\b(?:about|regarding|sobre|a respeito de|falando de|acerca de)\s+(.+)$", re.I)
_TOPIC_WEAK = re.compile(r"\b(?:on|de|do|da)\s+(.+)$", re.I)
#: the form words after the topic: "… for LinkedIn", "… no Instagram", "… em tom casual"
_FORM_TAIL = re.compile(
    r"(?:\s*,\s*|\s+)(?:(?:for|on|in|with|using|para|pro|pra|no|na|em|com|num|numa|by)\s+)"
    r"(?:(?:o|a|um|uma|the|my|meu|minha|an?)\s+)?(?:\w+\s+)?"
    r"(?:linkedin|instagram|insta|twitter|x|blog|tone|tom|voice|style|estilo|jeito|format|formato)\b.*$",
    re.I,
)


def normalize(text: str) -> str:
    """Lower case, no accents, single spaces: ``"Cardápio  NOVO"`` → ``"cardapio novo"``."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w#+ ]+", " ", plain).split())


@dataclass(frozen=True)
class Order:
    language: str
    platform: str | None = None
    length: str | None = None
    tone: str | None = None
    topic: str | None = None

    def fields(self) -> dict[str, str]:
        """The fields the order names (they override the profile's brief)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "language"}


def detect_language(text: str) -> str:
    return "pt_BR" if _PT_HINT.search(normalize(text)) else "en"


def is_order(text: str) -> bool:
    return _ORDER.search(normalize(text)) is not None


def find_value(text: str, words: dict[str, tuple[str, ...]]) -> str | None:
    """The first value whose word occurs in ``text`` as a whole word (``"x"`` only as a word)."""
    norm = f" {normalize(text)} "
    best: tuple[int, str] | None = None
    for value, names in words.items():
        for name in names:
            at = norm.find(f" {name} ")
            if at >= 0 and (best is None or at < best[0]):
                best = (at, value)
    return best[1] if best else None


#: words that end a topic without being part of it ("… sobre nossa história, tom profissional")
_TRAILING = {"e", "and", "tom", "tone", "em", "in", "a", "com", "with", "style", "estilo"}


def topic_of(text: str) -> str | None:
    """What the order is about: the words after "about"/"sobre", without the form words after them."""
    words = " ".join(text.split()).rstrip(" .!?")
    m = _TOPIC_STRONG.search(words)
    if m is None:
        m = _TOPIC_WEAK.search(words)
        if m is None or find_value(m.group(1).split()[0], PLATFORM_WORDS):
            return None
    topic = m.group(1)
    tail = _FORM_TAIL.search(topic)
    if tail is not None:
        topic = topic[: tail.start()]
    parts = topic.rstrip(" ,.").split()
    # "… sobre o cardápio, curto" → drop trailing length/tone words
    while len(parts) > 1 and (
        find_value(parts[-1], LENGTH_WORDS)
        or find_value(parts[-1], TONE_WORDS)
        or normalize(parts[-1]) in _TRAILING
    ):
        parts.pop()
    if len(parts) > 1 and parts[0].lower() in ("o", "a", "os", "as", "the"):
        parts.pop(0)
    topic = " ".join(parts).strip(" ,.;:!?\"'")
    return topic[:120] or None


def parse_order(text: str, language: str | None = None) -> Order | None:
    """The order in ``text``, or None when it is not one (a note)."""
    if not text or not is_order(text):
        return None
    topic = topic_of(text)
    # the form is read outside the topic ("a post about X" is not for X); the kind of post can
    # name the platform ("a tweet", "um artigo")
    form = " ".join(text.split())
    if topic:
        form = form.replace(topic, " ")
    return Order(
        language=language or detect_language(text),
        platform=find_value(form, PLATFORM_WORDS),
        length=find_value(form, LENGTH_WORDS),
        tone=find_value(form, TONE_WORDS),
        topic=topic,
    )


# --- answers to a clarification ------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    id: str
    title: str
    value: str


def match_answer(
    choices: list[Choice], *, payload: str | None, text: str | None, field: str
) -> Choice | None:
    """The choice the answer means, or None. Tried in order: reply id, number, title or a word
    for the value, close spelling of a title (``difflib``, cutoff 0.75)."""
    by_id = {c.id: c for c in choices}
    if payload and payload in by_id:
        return by_id[payload]
    for candidate in (text, payload):
        if not candidate:
            continue
        norm = normalize(candidate)
        number = re.fullmatch(r"(\d{1,2})", norm.rstrip(". )"))
        if number:
            i = int(number.group(1))
            return choices[i - 1] if 1 <= i <= len(choices) else None
        for c in choices:
            if norm in (normalize(c.title), normalize(c.value)):
                return c
        words = FIELD_WORDS.get(field)
        if words:
            value = find_value(candidate, words)
            for c in choices:
                if c.value == value:
                    return c
        titles = {normalize(c.title): c for c in choices}
        close = difflib.get_close_matches(norm, list(titles), n=1, cutoff=0.75)
        if close:
            return titles[close[0]]
    return None
