"""The content job's four agents behind one interface.

Each agent reads the job (profile, notes, outputs of the steps before it) and returns a
``StepResult``: its output (JSON, saved with its step), the model that produced it and the tokens
spent. Order builder, writer and editor each come offline (the deterministic ``writer.py``
functions) and model-backed (``llm.ChatClient``, prompts in ``prompts/<language>/<agent>.md``);
``build_agents`` picks per agent from the settings. Retrieval is always SQL full-text search.

An agent that cannot do its step raises ``StepFailed`` (or an ``llm.LLMError``), whose message a
user can read; the job records the step ``failed`` and stops there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.pipeline import orders, writer
from services.pipeline.llm import ChatClient, LLMError
from services.pipeline.settings import PipelineSettings

PROMPTS = Path(__file__).parent / "prompts"
RETRIEVAL_MODEL = "postgres-fts"


class StepFailed(Exception):
    """A step that cannot be done; the message is for the user."""


@dataclass(frozen=True)
class StepResult:
    output: Any
    model: str
    tokens: int = 0


class NoteSource(Protocol):
    """The user's notes, as the job's agents see them (``jobs.py`` answers from PostgreSQL)."""

    async def recent(self, limit: int) -> list[str]: ...

    async def search(self, query: str, config: str, limit: int) -> list[dict[str, str]]: ...


@dataclass
class Job:
    """What an agent reads: the user's profile, their notes, and what the steps before it made."""

    profile: dict[str, Any]
    notes: NoteSource
    outputs: dict[str, Any] = field(default_factory=dict)
    #: fields of the brief fixed by an order ("a short LinkedIn post about…"); the rest from the profile
    brief_override: dict[str, Any] | None = None

    @property
    def language(self) -> str:
        return self.profile.get("language") or "en"

    @property
    def brief(self) -> writer.Brief:
        return writer.Brief(**self.outputs["order_builder"])

    @property
    def citations(self) -> list[dict[str, str]]:
        return self.outputs.get("retrieval") or []


class Agent(Protocol):
    name: str
    #: what the step records as its model when it fails before an answer names one
    model: str

    async def run(self, job: Job) -> StepResult: ...


@cache
def prompt(language: str, agent: str) -> str:
    folder = language if (PROMPTS / language).is_dir() else "en"
    return (PROMPTS / folder / f"{agent}.md").read_text(encoding="utf-8")


def _offline_brief(job: Job, recent: list[str]) -> writer.Brief:
    """The brief is built here and only here: the profile's form, overridden by an order's fields."""
    brief = writer.build_brief(job.profile, recent).as_dict()
    brief |= {k: v for k, v in (job.brief_override or {}).items() if v and k in brief}
    return writer.Brief(**brief)


# --- offline ----------------------------------------------------------------------------------


class OfflineOrderBuilder:
    model = writer.OFFLINE_MODEL
    name = "order_builder"

    async def run(self, job: Job) -> StepResult:
        brief = _offline_brief(job, await job.notes.recent(20))
        return StepResult(brief.as_dict(), writer.OFFLINE_MODEL)


class Retrieval:
    """The user's notes ranked by full-text search in their language; the chosen ones are cited."""

    name = "retrieval"
    model = RETRIEVAL_MODEL

    def __init__(self, limit: int = 6) -> None:
        self.limit = limit

    async def run(self, job: Job) -> StepResult:
        brief = job.brief
        config = writer.ts_config(job.language)
        found = await job.notes.search(brief.topic.replace(",", " or "), config, self.limit)
        if not found:
            raise StepFailed("no notes to write from")
        return StepResult(found, RETRIEVAL_MODEL)


class OfflineWriter:
    model = writer.OFFLINE_MODEL
    name = "writer"

    async def run(self, job: Job) -> StepResult:
        text = writer.write(job.brief, [c["text"] for c in job.citations])
        return StepResult({"text": text}, writer.OFFLINE_MODEL)


class OfflineEditor:
    model = writer.OFFLINE_MODEL
    name = "editor"

    async def run(self, job: Job) -> StepResult:
        title, text = writer.edit(job.brief, job.outputs["writer"]["text"])
        return StepResult({"title": title, "text": text}, writer.OFFLINE_MODEL)


# --- model-backed -----------------------------------------------------------------------------


class BriefAnswer(BaseModel):
    topic: str = Field(min_length=1, max_length=120)
    angle: str = Field(min_length=1, max_length=200)


class WriterAnswer(BaseModel):
    text: str = Field(min_length=1, max_length=20000)


class EditorAnswer(BaseModel):
    title: str = Field(min_length=1, max_length=80)
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _fits(cls, text: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("limit")
        if limit and len(text) > limit:
            raise ValueError(f"the post has {len(text)} characters; the platform allows at most {limit}")
        return text


def _messages(job: Job, agent: str, payload: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": prompt(job.language, agent)},
        {"role": "user", "content": json.dumps(payload, ensure_ascii=False)},
    ]


def _numbered(citations: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"n": i + 1, "note": c["text"]} for i, c in enumerate(citations)]


class ModelOrderBuilder:
    """The profile (or an order) fixes platform, tone and length; the model picks topic and angle."""

    name = "order_builder"

    def __init__(self, client: ChatClient, model: str) -> None:
        self.client, self.model = client, model

    async def run(self, job: Job) -> StepResult:
        recent = await job.notes.recent(20)
        base = _offline_brief(job, recent)
        if (job.brief_override or {}).get("topic"):
            return StepResult(base.as_dict(), writer.OFFLINE_MODEL)
        payload = {
            "platform": base.platform,
            "tone": base.tone,
            "length": base.length,
            "suggested_topic": base.topic,
            "profile_topics": job.profile.get("topics") or [],
            "recent_notes": recent[:10],
        }
        answer = await self.client.structured(
            self.name, self.model, _messages(job, self.name, payload), BriefAnswer
        )
        brief = base.as_dict() | answer.value.model_dump()
        return StepResult(brief, answer.model, answer.tokens)


class ModelWriter:
    name = "writer"

    def __init__(self, client: ChatClient, model: str) -> None:
        self.client, self.model = client, model

    async def run(self, job: Job) -> StepResult:
        payload = {"brief": job.brief.as_dict(), "cited_notes": _numbered(job.citations)}
        answer = await self.client.structured(
            self.name, self.model, _messages(job, self.name, payload), WriterAnswer, temperature=0.7
        )
        return StepResult(answer.value.model_dump(), answer.model, answer.tokens)


class ModelEditor:
    name = "editor"

    def __init__(self, client: ChatClient, model: str) -> None:
        self.client, self.model = client, model

    async def run(self, job: Job) -> StepResult:
        brief = job.brief
        limit = writer.LIMITS.get(brief.platform, 3000)
        payload = {
            "brief": brief.as_dict(),
            "limit": limit,
            "post": job.outputs["writer"]["text"],
            "cited_notes": _numbered(job.citations),
        }
        answer = await self.client.structured(
            self.name,
            self.model,
            _messages(job, self.name, payload),
            EditorAnswer,
            context={"limit": limit},
            temperature=0.2,
        )
        return StepResult(answer.value.model_dump(), answer.model, answer.tokens)


# --- reading an order (inbound, before any job) ------------------------------------------------


class OrderAnswer(BaseModel):
    """What an order asks for; null where it does not say (the conversation asks for it). Every
    key is required and no other is allowed: an answer of another shape is not a reading."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["linkedin", "instagram", "x", "blog"] | None
    length: Literal["short", "medium", "long"] | None
    tone: Literal["professional", "casual", "friendly", "authoritative"] | None
    topic: str | None = Field(max_length=120)


class ModelOrderParser:
    """An inbound order read by the model (structured output, validated as ``OrderAnswer``).

    ``parse`` never fails: a model that is unavailable, or whose answer stays invalid after the
    client's corrective retry, leaves the order to the rule-based parser (``orders.parse_order``)."""

    name = "order_parser"

    def __init__(self, client: ChatClient, model: str) -> None:
        self.client, self.model = client, model

    async def parse(self, text: str) -> orders.Order | None:
        rule_based = orders.parse_order(text)
        if rule_based is None:
            return None  # not an order: a note, and no model call for it
        messages = [
            {"role": "system", "content": prompt(rule_based.language, self.name)},
            {"role": "user", "content": json.dumps({"message": text}, ensure_ascii=False)},
        ]
        try:
            answer = await self.client.structured(self.name, self.model, messages, OrderAnswer, temperature=0)
        except LLMError:
            return rule_based  # the client logged and counted why
        a = answer.value
        topic = " ".join((a.topic or "").split()) or None
        return orders.Order(rule_based.language, a.platform, a.length, a.tone, topic)


# --- choosing ---------------------------------------------------------------------------------

Kind = Literal["order_builder", "writer", "editor"]
_MODEL_BACKED = {"order_builder": ModelOrderBuilder, "writer": ModelWriter, "editor": ModelEditor}
_OFFLINE = {"order_builder": OfflineOrderBuilder, "writer": OfflineWriter, "editor": OfflineEditor}


def client_from(settings: PipelineSettings) -> ChatClient | None:
    if not settings.llm_base_url:
        return None
    return ChatClient(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout=settings.llm_timeout_seconds,
        concurrency=settings.llm_concurrency,
        max_attempts=settings.llm_max_attempts,
        backoff=settings.llm_backoff_seconds,
        retry_after_cap=settings.llm_retry_after_cap_seconds,
    )


def build_agents(settings: PipelineSettings, client: ChatClient | None) -> list[Agent]:
    """The four agents in job order; a model-backed one where the settings name a model for it."""

    def pick(kind: Kind) -> Agent:
        model = settings.model_for(kind)
        if client is not None and model:
            return _MODEL_BACKED[kind](client, model)
        return _OFFLINE[kind]()

    return [pick("order_builder"), Retrieval(), pick("writer"), pick("editor")]


def build_order_parser(settings: PipelineSettings, client: ChatClient | None) -> ModelOrderParser | None:
    """The model order parser when the settings name a model for it, else None (rule-based)."""
    model = settings.model_for("order_parser")
    return ModelOrderParser(client, model) if client is not None and model else None
