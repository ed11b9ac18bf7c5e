"""The pipeline's faults with the four services as processes (``herald run``) on real RabbitMQ and
PostgreSQL, the model configured and played by a local OpenAI-compatible stand-in run by the test:

- a model failing with 500, 429 and a timeout is retried (the stand-in counts the requests), then
  the user gets exactly one error message at the sandbox and the draft is failed;
- the pipeline killed (SIGKILL) in the middle of a job loses no job: after the restart the job
  resumes from its last finished step (the stand-in gets no second call for a finished step);
- on SIGTERM the pipeline closes its model client: a clean exit, no "Unclosed client" warning."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.fake_llm import FakeChatModel
from devtools.processes import ServiceProcess, free_port, ingest_env
from herald.services import SERVICES
from tests.conftest import Infra
from tests.e2e.conftest import Herald, wait_for
from tests.e2e.pipeline.test_pipeline_flow import NOTES, User

pytestmark = pytest.mark.e2e
MAX_ATTEMPTS = 3
FAILED_TEXT = (
    "I couldn't write the post right now: the writing service is unavailable. "
    "Please ask again in a few minutes."
)


class ModelThread:
    """The stand-in model on an event loop of its own thread (the test itself is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fake = FakeChatModel(retry_after="0", slow_seconds=10.0)

    def __enter__(self) -> FakeChatModel:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeChatModel]:
    with ModelThread() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_model(llm: FakeChatModel) -> None:
    llm.default = "ok"
    llm._script.clear()
    llm.delay_next.clear()


@pytest.fixture(scope="module")
def herald(infra: Infra, llm: FakeChatModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    """The four services, the pipeline's model agents pointed at the stand-in (the order parser
    stays rule-based: each model call a test counts is a step of the content job)."""
    tmp = Path(tmp_path_factory.mktemp("herald-faults"))
    ports = {name: free_port() for name in SERVICES}
    env = infra.service_env(
        SENDER_SENDING_LEASE_SECONDS="3",
        HERALD_GRACEFUL_TIMEOUT_SECONDS="10",
        PIPELINE_LLM_BASE_URL=llm.base_url,
        PIPELINE_LLM_MODEL="local-7b",
        PIPELINE_LLM_MODEL_ORDER_PARSER="offline",
        PIPELINE_LLM_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        PIPELINE_LLM_BACKOFF_SECONDS="0.05",
        PIPELINE_LLM_TIMEOUT_SECONDS="2",
        **ingest_env(ports["sender"]),
    )
    services = {name: ServiceProcess(name, ports[name], env, tmp / f"{name}.log") for name in SERVICES}
    # an HTTP pool left open shows at exit as aiohttp's "Unclosed client session" ResourceWarning,
    # which Python hides unless asked
    pipeline_env = {**env, "PYTHONWARNINGS": "always::ResourceWarning"}
    services["pipeline"] = ServiceProcess("pipeline", ports["pipeline"], pipeline_env, tmp / "pipeline.log")
    system = Herald(infra=infra, services=services, env=env, tmp=tmp)
    for svc in services.values():
        svc.start()
    try:
        for svc in services.values():
            svc.wait_ready()
        yield system
    finally:
        system.stop()


def requests_for(llm: FakeChatModel, schema: str) -> list[dict[str, Any]]:
    """The requests the stand-in got for one agent (by the json_schema name it asks for)."""
    return [
        b
        for b in list(llm.received)
        if b.get("response_format", {}).get("json_schema", {}).get("name") == schema
    ]


def with_notes(herald: Herald, **profile: Any) -> User:
    user = User(herald, **profile)
    for note in NOTES:
        user.text(note)
    wait_for(lambda: sorted(user.notes()) == sorted(NOTES), 60, "the notes in the pipeline")
    return user


def test_a_failing_model_is_retried_then_the_user_gets_one_error_message(
    herald: Herald, llm: FakeChatModel
) -> None:
    user = with_notes(herald, platforms=["linkedin"])
    before = len(requests_for(llm, "WriterAnswer"))
    # the order names its topic, so the brief needs no model: the writer is the first call
    llm.script("500", "429", "slow")  # HTTP 500, a 429 with Retry-After, no answer within the timeout
    llm.default = "503"
    user.text("write me a LinkedIn post about our new menu")

    def failed() -> dict[str, Any] | None:
        drafts = user.drafts()
        return drafts[0] if drafts and drafts[0]["status"] == "failed" else None

    draft = wait_for(failed, 90, "the failed draft")
    assert len(requests_for(llm, "WriterAnswer")) - before == MAX_ATTEMPTS, "every attempt, then given up"
    assert "did not answer after 3 attempts" in draft["error"]
    writer = next(
        s for s in user.pipeline.get(f"/v1/drafts/{draft['id']}").json()["steps"] if s["agent"] == "writer"
    )
    assert writer["status"] == "failed" and writer["model"] == "local-7b"

    [message] = wait_for(user.sandbox, 60, "the error message at the sandbox")
    assert message["text"] == FAILED_TEXT
    assert requests_for(llm, "EditorAnswer") == [] or all(
        user.id not in str(b) for b in requests_for(llm, "EditorAnswer")
    ), "no step after the failed one"
    assert [m["text"] for m in user.sandbox()] == [FAILED_TEXT], "one message: no question, no notice"


def test_a_pipeline_killed_mid_job_resumes_from_its_last_finished_step(
    herald: Herald, llm: FakeChatModel
) -> None:
    user = with_notes(herald, platforms=["linkedin"], topics=["new menu"], notify_on_ready=False)
    counts = {s: len(requests_for(llm, s)) for s in ("BriefAnswer", "WriterAnswer", "EditorAnswer")}
    llm.delay_next["WriterAnswer"] = 30.0  # the writer's first call hangs: the kill lands mid-job
    # no topic in the order: the order builder asks the model for the brief
    user.text("write me a LinkedIn post")

    def new(schema: str) -> int:
        return len(requests_for(llm, schema)) - counts[schema]

    wait_for(lambda: new("WriterAnswer") == 1, 60, "the writer step waiting on the model")
    [draft] = user.drafts()
    assert draft["status"] == "running"
    before = {s["agent"]: s for s in user.pipeline.get(f"/v1/drafts/{draft['id']}").json()["steps"]}
    assert set(before) == {"order_builder", "retrieval"} and all(
        s["status"] == "done" for s in before.values()
    )

    pipeline = herald.services["pipeline"]
    pipeline.kill()
    pipeline.start()
    pipeline.wait_ready()

    def ready() -> dict[str, Any] | None:
        d = user.pipeline.get(f"/v1/drafts/{draft['id']}").json()
        return d if d["status"] == "ready" else None

    done = wait_for(ready, 90, "the resumed draft ready")
    assert [d["id"] for d in user.drafts()] == [draft["id"]], "the same job, no second draft"
    steps = {s["agent"]: s for s in done["steps"]}
    assert [s["agent"] for s in done["steps"]] == ["order_builder", "retrieval", "writer", "editor"]
    for agent in ("order_builder", "retrieval"):  # finished before the kill: kept as they were
        assert steps[agent]["started_at"] == before[agent]["started_at"]
        assert steps[agent]["finished_at"] == before[agent]["finished_at"]
    killed_at = datetime.fromisoformat(before["retrieval"]["finished_at"])
    assert datetime.fromisoformat(steps["writer"]["started_at"]) > killed_at
    assert new("BriefAnswer") == 1, "the finished order builder step was not asked again"
    assert new("WriterAnswer") == 2, "the writer's interrupted call, then the resumed one"
    assert new("EditorAnswer") == 1
    assert "vegan feijoada" in done["text"] or "new menu" in done["text"]


def test_sigterm_closes_the_model_client_and_exits_cleanly(herald: Herald, llm: FakeChatModel) -> None:
    user = with_notes(herald, platforms=["linkedin"], notify_on_ready=False)
    user.text("write me a LinkedIn post about our new menu")
    wait_for(user.ready_draft, 60, "a draft written through the model client")
    assert requests_for(llm, "EditorAnswer"), "the model client was used before the shutdown"

    pipeline = herald.services["pipeline"]
    # uvicorn re-raises SIGTERM after its graceful shutdown: "terminated by SIGTERM" is clean
    assert pipeline.terminate(timeout=30) in (0, -15), pipeline.log_tail()
    log = pipeline.log_path.read_text(errors="replace")
    last_run = log[log.rindex("Started server process") :]
    assert "service stopped" in last_run and "Application shutdown complete" in last_run, pipeline.log_tail()
    # uvicorn's re-raised SIGTERM ends the process before any finalizer could warn about an open
    # pool, so the close is asserted where it shows: in the shutdown sequence, before "stopped"
    stopping = last_run.index("service stopping")
    assert stopping < last_run.find("model client closed") < last_run.index("service stopped"), (
        pipeline.log_tail()
    )
    assert "Unclosed" not in last_run, pipeline.log_tail()
