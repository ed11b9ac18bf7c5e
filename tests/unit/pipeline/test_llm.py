"""The chat-completions client against a local server speaking the OpenAI contract: retries and
their waits, errors that fail at once, structured output and its fallbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from devtools.fake_llm import FakeChatModel, _free_port
from services.pipeline.llm import (
    ChatClient,
    InvalidAnswer,
    ModelRejected,
    ModelUnavailable,
    parse_retry_after,
)


class Topic(BaseModel):
    topic: str
    angle: str


MESSAGES = [
    {"role": "system", "content": "plan a post"},
    {"role": "user", "content": '{"suggested_topic": "new menu"}'},
]


@pytest.fixture
async def llm() -> AsyncIterator[FakeChatModel]:
    async with FakeChatModel(slow_seconds=3.0, api_key="sk-test") as fake:
        yield fake


class Waits:
    """Stands in for asyncio.sleep so a test sees the backoff without spending it."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
async def client(llm: FakeChatModel) -> AsyncIterator[tuple[ChatClient, Waits]]:
    waits = Waits()
    c = ChatClient(
        base_url=llm.base_url,
        api_key="sk-test",
        timeout=0.5,
        max_attempts=4,
        backoff=0.5,
        retry_after_cap=10,
        sleep=waits,
    )
    try:
        yield c, waits
    finally:
        await c.aclose()


def failures(agent: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("herald_pipeline_llm_failures_total", {"agent": agent, "reason": reason})
        or 0.0
    )


async def test_a_structured_answer_with_its_model_and_tokens(llm: FakeChatModel, client) -> None:
    c, waits = client
    got = await c.structured("t_ok", "small-model", MESSAGES, Topic)
    assert got.value == Topic(topic="new menu", angle="what we learned")
    assert got.model == "small-model" and got.tokens > 0
    sent = llm.received[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "Topic"
    assert set(sent["response_format"]["json_schema"]["schema"]["properties"]) == {"topic", "angle"}
    assert waits.seconds == []
    assert REGISTRY.get_sample_value("herald_pipeline_llm_tokens_total", {"agent": "t_ok"}) == got.tokens
    assert REGISTRY.get_sample_value("herald_pipeline_llm_seconds_count", {"agent": "t_ok"}) == 1


async def test_429_waits_what_retry_after_says(llm: FakeChatModel, client) -> None:
    c, waits = client
    llm.retry_after = "7"
    llm.script("429")
    assert (await c.structured("t_429", "m", MESSAGES, Topic)).value.topic == "new menu"
    assert waits.seconds == [7.0] and len(llm.received) == 2


async def test_retry_after_as_a_date_is_capped(llm: FakeChatModel, client) -> None:
    c, waits = client
    llm.retry_after = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    llm.script("429")
    await c.structured("t_429", "m", MESSAGES, Topic)
    assert waits.seconds == [10.0], "an hour-long Retry-After is capped at retry_after_cap"


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=20), usegmt=True), now=now) == 20.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_5xx_is_retried_with_growing_jittered_backoff_then_fails_readably(llm, client) -> None:
    c, waits = client
    llm.default = "500"
    before = failures("t_500", "unavailable")
    with pytest.raises(ModelUnavailable) as err:
        await c.structured("t_500", "m", MESSAGES, Topic)
    assert str(err.value) == (
        "the language model did not answer after 4 attempts: "
        "HTTP 500 (The server had an error while processing your request.)"
    )
    assert len(llm.received) == 4 and len(waits.seconds) == 3
    assert all(0 <= w <= 0.5 * 2**i for i, w in enumerate(waits.seconds))
    assert failures("t_500", "unavailable") == before + 1


async def test_500_then_ok_succeeds(llm: FakeChatModel, client) -> None:
    c, _ = client
    llm.script("500", "503")
    assert (await c.structured("t_5xx", "m", MESSAGES, Topic)).value.angle == "what we learned"
    assert len(llm.received) == 3


async def test_a_slow_answer_is_a_timeout_and_is_retried(llm: FakeChatModel, client) -> None:
    c, _ = client
    llm.script("slow")
    assert (await c.structured("t_slow", "m", MESSAGES, Topic)).value.topic == "new menu"
    llm.default = "slow"
    with pytest.raises(ModelUnavailable, match=r"after 4 attempts: no answer within 0.5 s"):
        await c.structured("t_slow", "m", MESSAGES, Topic)


async def test_no_server_is_a_connection_error() -> None:
    waits = Waits()
    c = ChatClient(base_url=f"http://127.0.0.1:{_free_port()}/v1", max_attempts=2, sleep=waits)
    try:
        with pytest.raises(ModelUnavailable, match=r"after 2 attempts: could not connect"):
            await c.structured("t_conn", "m", MESSAGES, Topic)
    finally:
        await c.aclose()


async def test_other_4xx_fail_at_once_with_the_servers_message(llm: FakeChatModel, client) -> None:
    c, waits = client
    llm.script("401")
    with pytest.raises(ModelRejected) as err:
        await c.structured("t_401", "m", MESSAGES, Topic)
    assert err.value.status == 401 and "Incorrect API key provided." in str(err.value)
    assert len(llm.received) == 1 and waits.seconds == []


async def test_malformed_json_gets_one_corrective_retry(llm: FakeChatModel, client) -> None:
    c, _ = client
    llm.script("malformed")
    got = await c.structured("t_bad", "m", MESSAGES, Topic)
    assert got.value.topic == "new menu"
    second = llm.received[1]["messages"]
    assert second[-2]["role"] == "assistant" and "not valid" in second[-1]["content"]


async def test_an_answer_invalid_twice_fails_the_call(llm: FakeChatModel, client) -> None:
    c, _ = client
    llm.script("invalid", "invalid")
    before = failures("t_invalid", "invalid")
    with pytest.raises(InvalidAnswer, match=r"not valid after a corrective retry: topic: Field required"):
        await c.structured("t_invalid", "m", MESSAGES, Topic)
    assert len(llm.received) == 2 and failures("t_invalid", "invalid") == before + 1


async def test_a_server_without_response_format_is_asked_in_words(llm: FakeChatModel, client) -> None:
    c, _ = client
    llm.reject_response_format = True
    assert (await c.structured("t_rf", "m", MESSAGES, Topic)).value.topic == "new menu"
    assert "response_format" in llm.received[0] and "response_format" not in llm.received[1]
    assert "JSON schema" in llm.received[1]["messages"][-1]["content"]
    assert c.supports_response_format is False
    await c.structured("t_rf", "m", MESSAGES, Topic)
    assert len(llm.received) == 3, "once rejected, response_format is not sent again"
