"""The content job's four agents, offline and deterministic. Pure functions of their inputs.

1. ``build_brief`` (order builder): platform, tone, length, topic, angle from the profile and notes;
2. retrieval is SQL (``repository.search_notes``): it ranks notes, the job keeps the chosen ones;
3. ``write`` (writer): a hook, points drawn from the cited notes, a close;
4. ``edit`` (editor): the platform's length limit and hashtags, and a title.
No sentence states a fact that is not in a cited note.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

PLATFORMS = ("linkedin", "instagram", "x", "blog")
TONES = ("professional", "casual", "friendly", "authoritative")
LENGTHS = ("short", "medium", "long")
LANGUAGES = ("pt_BR", "en")
#: characters a post may have on each platform
LIMITS = {"x": 280, "linkedin": 3000, "instagram": 2200, "blog": 20000}
#: how many points of the notes each length carries
POINTS = {"short": 1, "medium": 3, "long": 6}
#: PostgreSQL text-search configuration per language
TS_CONFIG = {"pt_BR": "portuguese", "en": "english"}
AGENTS = ("order_builder", "retrieval", "writer", "editor")
OFFLINE_MODEL = "offline"

_WORD = re.compile(r"[\wÀ-ÿ]{4,}", re.UNICODE)
_STOP = {
    "that", "this", "with", "from", "have", "about", "what", "will", "they", "their", "there",
    "para", "como", "mais", "esse", "essa", "isso", "quando", "sobre", "muito", "nosso", "nossa",
}  # fmt: skip


def ts_config(language: str) -> str:
    return TS_CONFIG.get(language, "simple")


@dataclass(frozen=True)
class Brief:
    platform: str
    tone: str
    length: str
    topic: str
    angle: str
    language: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def keywords(texts: list[str], n: int = 3) -> list[str]:
    """The most frequent content words of the texts, ties broken by first appearance."""
    counts: dict[str, int] = {}
    for text in texts:
        for w in _WORD.findall(text.lower()):
            if w not in _STOP:
                counts[w] = counts.get(w, 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]


def build_brief(profile: dict[str, Any], recent_notes: list[str], *, slot_index: int = 0) -> Brief:
    """The profile decides the form; the topic is the profile's next topic, else what the notes talk about."""
    platforms = profile.get("platforms") or ["linkedin"]
    topics = profile.get("topics") or []
    topic = topics[slot_index % len(topics)] if topics else " ".join(keywords(recent_notes, 2)) or "news"
    pt = profile.get("language") == "pt_BR"
    angle = (
        ("o que aprendemos" if pt else "what we learned")
        if recent_notes
        else ("uma ideia" if pt else "an idea")
    )
    return Brief(
        platform=platforms[slot_index % len(platforms)],
        tone=profile.get("tone") or "professional",
        length=profile.get("length") or "medium",
        topic=topic,
        angle=angle,
        language=profile.get("language") or "en",
    )


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


_HOOKS = {
    "en": {
        "professional": "A few thoughts on {topic}.",
        "casual": "Let's talk about {topic}.",
        "friendly": "Something I'd love to share about {topic}!",
        "authoritative": "Here is what matters about {topic}.",
    },
    "pt_BR": {
        "professional": "Algumas reflexões sobre {topic}.",
        "casual": "Bora falar de {topic}.",
        "friendly": "Quero compartilhar algo sobre {topic}!",
        "authoritative": "O que importa sobre {topic}.",
    },
}
_CLOSE = {
    "en": "What is your experience with {topic}?",
    "pt_BR": "Qual é a sua experiência com {topic}?",
}


def write(brief: Brief, cited: list[str]) -> str:
    """Hook, one line per cited point (as many as the length carries), a question to close."""
    lang = brief.language if brief.language in _HOOKS else "en"
    hook = _HOOKS[lang].get(brief.tone, _HOOKS[lang]["professional"]).format(topic=brief.topic)
    points = [_sentence(n) for n in cited[: POINTS.get(brief.length, 3)] if n.strip()]
    bullet = "" if brief.platform == "x" else "• "
    body = "\n".join(f"{bullet}{p}" for p in points)
    close = _CLOSE[lang].format(topic=brief.topic)
    return "\n\n".join(part for part in (hook, body, close) if part)


def hashtags(brief: Brief, n: int) -> list[str]:
    words = [w for w in re.split(r"\W+", brief.topic) if w]
    tags = ["#" + "".join(w.capitalize() for w in words)] if words else []
    return tags[:n]


def edit(brief: Brief, text: str) -> tuple[str, str]:
    """Fit the platform: hashtags where they belong, cut at the limit on a word. Returns (title, text)."""
    limit = LIMITS.get(brief.platform, 3000)
    tags = hashtags(brief, 0 if brief.platform == "blog" else 3 if brief.platform == "instagram" else 1)
    suffix = ("\n\n" + " ".join(tags)) if tags else ""
    room = limit - len(suffix)
    if len(text) > room:
        cut = text[: room - 1].rsplit(" ", 1)[0].rstrip(" ,;:•\n")
        text = cut + "…"
    title = _sentence(brief.topic).rstrip(".")[:80]
    return title, text + suffix


_NOTICE = {
    "en": 'Your {platform} draft "{title}" is ready (id {draft_id}). Tip: read it aloud once before posting.',
    "pt_BR": 'Seu rascunho para {platform} "{title}" está pronto (id {draft_id}). Dica: leia em voz alta antes de postar.',
}
_PLATFORM_NAME = {"linkedin": "LinkedIn", "instagram": "Instagram", "x": "X", "blog": "blog"}


def ready_notice(language: str, platform: str, title: str, draft_id: str) -> str:
    template = _NOTICE.get(language, _NOTICE["en"])
    return template.format(platform=_PLATFORM_NAME.get(platform, platform), title=title, draft_id=draft_id)
