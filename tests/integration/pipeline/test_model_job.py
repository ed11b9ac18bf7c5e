"""A content job with the language model configured, on a real PostgreSQL and a local
OpenAI-compatible server: the steps record the model and its tokens; a model that keeps failing
fails the draft with a readable error, and a retry resumes from the failed step."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devtools.database import create_migrated_database, drop_database
from devtools.fake_llm import FakeChatModel
from services.pipeline import handlers, jobs
from services.pipeline.app import build
from services.pipeline.settings import PipelineSettings
from shared.crypto import SecretBox
from shared.events import InboundReceived, PacingDue, new_event
from shared.tenancy import create_tenant
from tests.conftest import Infra

pytestmark = pytest.mark.integration

NOTES = [
    "Our new menu has a vegan feijoada that sold out on Friday",
    "Customers asked for the new menu in English too",
]


@pytest.fixture(scope="module")
def database_url(infra: Infra) -> Iterator[str]:
    name, url = create_migrated_database(infra.database_url, "herald_pipe_llm")
    try:
        yield url
    finally:
        drop_database(infra.database_url, name)


@pytest.fixture
async def system(database_url: str, infra: Infra) -> AsyncIterator[tuple[Any, uuid.UUID, Any, FakeChatModel]]:
    async with FakeChatModel(api_key="sk-local", retry_after="0", slow_seconds=6.0) as llm:
        settings = PipelineSettings(
            database_url=database_url,
            amqp_url=infra.amqp_url,
            encryption_keys=SecretBox.generate_key(),
            secret_key=uuid.uuid4().hex,
            environment="test",
            llm_base_url=llm.base_url,
            llm_api_key="sk-local",
            llm_model="local-7b",
            llm_model_editor="local-editor",
            llm_max_attempts=4,
            llm_backoff_seconds=0.01,
            llm_timeout_seconds=3,
        )
        runtime, app = build(settings)
        tenant, key = await create_tenant(runtime.engine, f"pipe-llm-{uuid.uuid4().hex[:8]}")
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://pipeline",
            headers={"Authorization": f"Bearer {key}"},
        )
        try:
            yield runtime, tenant.id, client, llm
        finally:
            await client.aclose()
            await jobs.close_agents(runtime)
            await runtime.engine.dispose()


async def user_with_notes(runtime: Any, tenant_id: uuid.UUID, client: httpx.AsyncClient) -> str:
    user = f"u-{uuid.uuid4().hex[:6]}"
    r = await client.put(f"/v1/profiles/{user}", json={"platforms": ["instagram"], "topics": ["new menu"]})
    assert r.status_code == 200, r.text
    for text in NOTES:
        data = InboundReceived(
            provider="meta",
            provider_message_id=uuid.uuid4().hex,
            from_phone="+5511988887777",
            kind="text",
            text=text,
            user_id=user,
            received_at=datetime.now(UTC),
        )
        assert await handlers.store_note(
            runtime, new_event(data, tenant_id=tenant_id, source="/herald/ingest")
        )
    return user


def pacing(tenant_id: uuid.UUID, user_id: str) -> Any:
    data = PacingDue(user_id=user_id, schedule_id=uuid.uuid4(), slot_at=datetime.now(UTC))
    return new_event(data, tenant_id=tenant_id, source="/herald/scheduler")


async def test_a_model_written_draft_records_models_and_tokens(system: Any) -> None:
    runtime, tenant_id, client, llm = system
    user = await user_with_notes(runtime, tenant_id, client)
    draft_id = await handlers.on_pacing_due(runtime, pacing(tenant_id, user))
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "ready", draft["error"]
    assert "vegan feijoada" in draft["text"] and len(draft["text"]) <= 2200
    assert draft["title"] == "New menu"
    steps = {s["agent"]: s for s in draft["steps"]}
    assert {a: s["model"] for a, s in steps.items()} == {
        "order_builder": "local-7b",
        "retrieval": "postgres-fts",
        "writer": "local-7b",
        "editor": "local-editor",
    }
    assert all(steps[a]["tokens"] > 0 for a in ("order_builder", "writer", "editor"))
    assert all(s["status"] == "done" and s["finished_at"] for s in draft["steps"])
    assert len(llm.received) == 3, "one call per model agent"


async def test_a_failing_model_fails_the_draft_and_a_retry_resumes_there(system: Any) -> None:
    runtime, tenant_id, client, llm = system
    user = await user_with_notes(runtime, tenant_id, client)
    llm.script("ok")  # the order builder is answered; the writer then meets an outage
    llm.default = "503"
    draft_id = await handlers.on_pacing_due(runtime, pacing(tenant_id, user))
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "failed"
    assert draft["error"] == (
        "the language model did not answer after 4 attempts: "
        "HTTP 503 (The server had an error while processing your request.)"
    )
    steps = {s["agent"]: s for s in draft["steps"]}
    assert [s["agent"] for s in draft["steps"]] == ["order_builder", "retrieval", "writer"]
    assert steps["order_builder"]["status"] == "done" and steps["retrieval"]["status"] == "done"
    assert steps["writer"]["status"] == "failed" and steps["writer"]["error"] == draft["error"]
    assert len(llm.received) == 1 + 4

    # a retry while the model is still down runs the writer alone, and fails the same way
    r = await client.post(f"/v1/drafts/{draft_id}/retry")
    assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["error"] == draft["error"]
    assert len(llm.received) == 1 + 4 + 4

    llm.default = "ok"
    r = await client.post(f"/v1/drafts/{draft_id}/retry")
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "ready" and done["error"] is None and "vegan feijoada" in done["text"]
    after = {s["agent"]: s for s in done["steps"]}
    assert after["order_builder"]["started_at"] == steps["order_builder"]["started_at"], "not redone"
    assert after["retrieval"]["started_at"] == steps["retrieval"]["started_at"], "not redone"
    assert all(s["status"] == "done" and s["error"] is None for s in done["steps"])
    assert len(llm.received) == 1 + 4 + 4 + 2, "only the writer and the editor were asked again"

    r = await client.post(f"/v1/drafts/{draft_id}/retry")
    assert r.status_code == 409 and "only a failed draft can be retried" in r.json()["message"]
    assert (await client.post(f"/v1/drafts/{uuid.uuid4()}/retry")).status_code == 404


async def test_an_answer_invalid_after_the_corrective_retry_fails_the_step(system: Any) -> None:
    runtime, tenant_id, client, llm = system
    user = await user_with_notes(runtime, tenant_id, client)
    llm.script("invalid", "malformed")
    draft_id = await handlers.on_pacing_due(runtime, pacing(tenant_id, user))
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "failed"
    assert draft["error"].startswith("the language model's answer was not valid after a corrective retry")
    assert [(s["agent"], s["status"]) for s in draft["steps"]] == [("order_builder", "failed")]
    assert draft["steps"][0]["model"] == "local-7b" and draft["steps"][0]["tokens"] > 0, "spent anyway"


async def test_429_timeouts_and_500_are_retried_and_the_draft_is_written(system: Any) -> None:
    runtime, tenant_id, client, llm = system
    user = await user_with_notes(runtime, tenant_id, client)
    llm.script("429", "slow", "500")  # the order builder's first three attempts
    draft_id = await handlers.on_pacing_due(runtime, pacing(tenant_id, user))
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "ready", draft["error"]
    assert all(s["status"] == "done" for s in draft["steps"])
    assert len(llm.received) == 4 + 1 + 1


async def test_an_orders_fields_override_the_brief_and_its_topic_needs_no_model_call(system: Any) -> None:
    runtime, tenant_id, client, llm = system
    user = await user_with_notes(runtime, tenant_id, client)
    order = {"platform": "x", "length": "short", "tone": None, "topic": "vegan feijoada"}
    draft_id = await jobs.run_content_job(runtime, tenant_id, user, f"order:{uuid.uuid4()}", order=order)
    draft = (await client.get(f"/v1/drafts/{draft_id}")).json()
    assert draft["status"] == "ready", draft["error"]
    assert draft["brief"]["platform"] == "x" and draft["brief"]["topic"] == "vegan feijoada"
    assert draft["brief"]["tone"] == "professional", "a field the order left out comes from the profile"
    assert len(draft["text"]) <= 280
    assert draft["steps"][0]["model"] == "offline" and len(llm.received) == 2
