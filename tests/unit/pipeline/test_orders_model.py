"""The model order parser against the local OpenAI-compatible stand-in (no database, no broker):
the model's reading when it is valid, the rule-based reading when it is not or never comes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from devtools.fake_llm import FakeChatModel
from services.pipeline.agents import ModelOrderParser
from services.pipeline.llm import ChatClient
from services.pipeline.orders import Order

ORDER = "escreve um post curto pro LinkedIn sobre o cardápio"
RULE_BASED = Order("pt_BR", platform="linkedin", length="short", topic="cardápio")


@pytest.fixture
async def parser() -> AsyncIterator[tuple[ModelOrderParser, FakeChatModel]]:
    async with FakeChatModel(retry_after="0") as llm:
        client = ChatClient(base_url=llm.base_url, max_attempts=2, backoff=0.01, timeout=2)
        try:
            yield ModelOrderParser(client, "parser-7b"), llm
        finally:
            await client.aclose()


async def test_a_valid_answer_is_the_reading(parser: tuple[ModelOrderParser, FakeChatModel]) -> None:
    p, llm = parser
    llm.script({"platform": "instagram", "length": None, "tone": "friendly", "topic": "  o cardápio  novo "})
    assert await p.parse(ORDER) == Order(
        "pt_BR", platform="instagram", tone="friendly", topic="o cardápio novo"
    )
    [body] = llm.received
    assert body["model"] == "parser-7b" and body["response_format"]["json_schema"]["name"] == "OrderAnswer"
    assert "Responda" in body["messages"][0]["content"], "the prompt in the order's language"


@pytest.mark.parametrize(
    "answers",
    [
        ["malformed", "malformed"],
        ["invalid", {"platform": "tiktok", "length": None, "tone": None, "topic": None}],
        ["500", "503"],
        ["401"],
    ],
)
async def test_a_bad_or_missing_answer_gives_the_rule_based_reading(
    parser: tuple[ModelOrderParser, FakeChatModel], answers: list[object]
) -> None:
    p, llm = parser
    llm.script(*answers)
    assert await p.parse(ORDER) == RULE_BASED
    assert len(llm.received) == len(answers)


async def test_a_note_is_not_sent_to_the_model(parser: tuple[ModelOrderParser, FakeChatModel]) -> None:
    p, llm = parser
    assert await p.parse("o chef testou doze sobremesas") is None
    assert llm.received == []
