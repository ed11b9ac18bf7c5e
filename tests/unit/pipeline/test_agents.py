"""The four agents behind one interface: which one the settings choose, the offline ones matching
``writer.py``, and the model-backed ones against a local OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from devtools.fake_llm import FakeChatModel
from services.pipeline import agents as ag
from services.pipeline import writer
from services.pipeline.llm import ChatClient, InvalidAnswer
from services.pipeline.settings import PipelineSettings

NOTES = [
    "Our new menu has a vegan feijoada that sold out on Friday",
    "Customers asked for the new menu in English too",
]
PROFILE = {
    "platforms": ["x"],
    "tone": "friendly",
    "length": "medium",
    "topics": ["new menu"],
    "language": "en",
}


class Notes:
    """A NoteSource over a list (the real one is SQL, tested in tests/integration/pipeline)."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes

    async def recent(self, limit: int) -> list[str]:
        return self.notes[:limit]

    async def search(self, query: str, config: str, limit: int) -> list[dict[str, str]]:
        return [{"note_id": str(i), "text": n} for i, n in enumerate(self.notes[:limit])]


async def run_all(agents: list[ag.Agent], job: ag.Job) -> list[ag.StepResult]:
    results = []
    for agent in agents:
        result = await agent.run(job)
        job.outputs[agent.name] = result.output
        results.append(result)
    return results


def settings(**kw: object) -> PipelineSettings:
    return PipelineSettings(**kw)  # type: ignore[arg-type]


def test_no_base_url_means_every_agent_offline() -> None:
    agents = ag.build_agents(settings(), None)
    assert [a.name for a in agents] == list(writer.AGENTS)
    assert [type(a) for a in agents] == [
        ag.OfflineOrderBuilder,
        ag.Retrieval,
        ag.OfflineWriter,
        ag.OfflineEditor,
    ]


def test_a_base_url_makes_them_model_backed_with_per_agent_models() -> None:
    s = settings(llm_base_url="http://127.0.0.1:1/v1", llm_model="big", llm_model_editor="small")
    client = ag.client_from(s)
    assert client is not None
    agents = ag.build_agents(s, client)
    assert [type(a) for a in agents] == [ag.ModelOrderBuilder, ag.Retrieval, ag.ModelWriter, ag.ModelEditor]
    assert [a.model for a in agents] == ["big", ag.RETRIEVAL_MODEL, "big", "small"]
    kept = ag.build_agents(settings(llm_base_url="http://127.0.0.1:1/v1", llm_model_writer="offline"), client)
    assert type(kept[2]) is ag.OfflineWriter and type(kept[3]) is ag.ModelEditor


@pytest.mark.parametrize("language", ["en", "pt_BR"])
@pytest.mark.parametrize("agent", ["order_builder", "writer", "editor"])
def test_every_model_agent_has_a_prompt_per_language(language: str, agent: str) -> None:
    assert len(ag.prompt(language, agent)) > 100


async def test_offline_agents_write_what_writer_py_writes() -> None:
    job = ag.Job(profile=PROFILE, notes=Notes(NOTES))
    results = await run_all(ag.build_agents(settings(), None), job)
    brief = writer.build_brief(PROFILE, NOTES)
    title, text = writer.edit(brief, writer.write(brief, NOTES))
    assert results[-1].output == {"title": title, "text": text}
    assert all(r.tokens == 0 for r in results) and results[0].model == writer.OFFLINE_MODEL


async def test_an_orders_fields_override_the_profile() -> None:
    job = ag.Job(profile=PROFILE, notes=Notes(NOTES), brief_override={"platform": "linkedin", "length": None})
    result = await ag.OfflineOrderBuilder().run(job)
    assert result.output["platform"] == "linkedin" and result.output["length"] == "medium"


async def test_retrieval_with_no_notes_fails_the_step() -> None:
    job = ag.Job(profile=PROFILE, notes=Notes([]))
    job.outputs["order_builder"] = (await ag.OfflineOrderBuilder().run(job)).output
    with pytest.raises(ag.StepFailed, match="no notes to write from"):
        await ag.Retrieval().run(job)


@pytest.fixture
async def model() -> AsyncIterator[tuple[FakeChatModel, ChatClient]]:
    async with FakeChatModel() as fake:
        client = ChatClient(base_url=fake.base_url, max_attempts=2, backoff=0.01)
        try:
            yield fake, client
        finally:
            await client.aclose()


async def test_model_agents_make_a_post_from_the_cited_notes(model) -> None:
    fake, client = model
    s = settings(llm_base_url=fake.base_url, llm_model="m1")
    job = ag.Job(profile={**PROFILE, "platforms": ["linkedin"]}, notes=Notes(NOTES))
    results = await run_all(ag.build_agents(s, client), job)
    assert job.outputs["order_builder"] == {
        "platform": "linkedin",
        "tone": "friendly",
        "length": "medium",
        "topic": "new menu",
        "angle": "what we learned",
        "language": "en",
    }
    assert "vegan feijoada" in job.outputs["writer"]["text"]
    assert job.outputs["editor"]["title"] == "New menu"
    assert [r.model for r in results] == ["m1", ag.RETRIEVAL_MODEL, "m1", "m1"]
    assert all(r.tokens > 0 for i, r in enumerate(results) if i != 1)
    writer_payload = json.loads(fake.received[1]["messages"][1]["content"])
    assert [c["note"] for c in writer_payload["cited_notes"]] == NOTES
    assert fake.received[1]["messages"][0]["content"] == ag.prompt("en", "writer")
    assert json.loads(fake.received[2]["messages"][1]["content"])["limit"] == 3000


async def test_pt_br_users_get_the_portuguese_prompts(model) -> None:
    fake, client = model
    job = ag.Job(profile={**PROFILE, "language": "pt_BR"}, notes=Notes(NOTES))
    await ag.ModelOrderBuilder(client, "m").run(job)
    assert fake.received[0]["messages"][0]["content"] == ag.prompt("pt_BR", "order_builder")
    assert "Você planeja" in fake.received[0]["messages"][0]["content"]


async def test_an_editor_answer_over_the_platform_limit_is_invalid(model) -> None:
    with pytest.raises(ValidationError, match="the platform allows at most 280"):
        ag.EditorAnswer.model_validate({"title": "t", "text": "x" * 281}, context={"limit": 280})
    fake, client = model
    job = ag.Job(profile=PROFILE, notes=Notes(NOTES))
    await run_all([ag.OfflineOrderBuilder(), ag.Retrieval(), ag.OfflineWriter()], job)
    fake.script("invalid", "invalid")
    with pytest.raises(InvalidAnswer):
        await ag.ModelEditor(client, "m").run(job)
