"""The Evolution API adapter over real HTTP against the local Evolution server: what the server
receives for each message kind, and how each of its error answers is classified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devtools.fake_providers.evolution import FakeEvolution
from services.sender.providers.base import Failure, LookupUnsupported, MemoryMappingStore, ProviderError
from services.sender.providers.evolution import EvolutionProvider
from tests.integration._gateways import (
    AUDIO,
    BUTTONS,
    DOCUMENT,
    IMAGE,
    LIST,
    NUMBERED_BUTTONS,
    NUMBERED_LIST,
    TEMPLATE,
    TEXT,
    TRANSPORTS,
    VIDEO,
    channel,
    http_client,
    outbound,
)

NUMBER = "5511999998888"


@pytest.fixture
async def evolution() -> AsyncIterator[FakeEvolution]:
    async with FakeEvolution(api_key="global-key", instances={"acme": "acme-token"}) as fake:
        yield fake


@pytest.fixture(params=TRANSPORTS)
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(request.param) as client:
        yield client


def _channel(fake: FakeEvolution, *, instance: str = "acme", api_key: str = "global-key"):
    return channel("evolution", fake.base_url, {"instance": instance}, {"api_key": api_key})


@pytest.mark.parametrize(
    ("content", "path", "body", "degraded"),
    [
        (TEXT, "sendText", {"number": NUMBER, "text": TEXT.body, "linkPreview": False}, None),
        (
            IMAGE,
            "sendMedia",
            {
                "number": NUMBER,
                "mediatype": "image",
                "mimetype": "image/jpeg",
                "media": IMAGE.link,
                "caption": "Your receipt",
            },
            None,
        ),
        (
            DOCUMENT,
            "sendMedia",
            {
                "number": NUMBER,
                "mediatype": "document",
                "mimetype": "application/pdf",
                "media": DOCUMENT.link,
                "caption": "Invoice",
                "fileName": "invoice.pdf",
            },
            None,
        ),
        (
            VIDEO,
            "sendMedia",
            {
                "number": NUMBER,
                "mediatype": "video",
                "mimetype": "video/mp4",
                "media": VIDEO.link,
                "caption": "How to",
            },
            None,
        ),
        (
            AUDIO,
            "sendMedia",
            {"number": NUMBER, "mediatype": "audio", "mimetype": "audio/ogg", "media": AUDIO.link},
            None,
        ),
        (
            BUTTONS,
            "sendText",
            {"number": NUMBER, "text": NUMBERED_BUTTONS},
            "quick replies sent as a numbered text list",
        ),
        (LIST, "sendText", {"number": NUMBER, "text": NUMBERED_LIST}, "list sent as a numbered text list"),
    ],
    ids=["text", "image", "document", "video", "audio", "buttons", "list"],
)
async def test_each_kind_reaches_evolution_as_its_contract_says(
    evolution: FakeEvolution,
    http: httpx.AsyncClient,
    content: Any,
    path: str,
    body: dict,
    degraded: str | None,
) -> None:
    result = await EvolutionProvider(http, MemoryMappingStore()).send(_channel(evolution), outbound(content))

    [request] = evolution.received
    assert (request.method, request.path) == ("POST", f"/message/{path}/acme")
    assert request.headers["apikey"] == "global-key"
    assert request.json == body
    assert result.provider_message_id == evolution.sent[-1]["key"]["id"]
    assert (result.degraded or "").startswith(degraded or "")
    assert (result.degraded is None) == (degraded is None)


async def test_the_instance_token_is_accepted_too(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    result = await EvolutionProvider(http, MemoryMappingStore()).send(
        _channel(evolution, api_key="acme-token"), outbound(TEXT)
    )
    assert result.provider_message_id


async def test_an_audio_caption_is_dropped_and_says_so(
    evolution: FakeEvolution, http: httpx.AsyncClient
) -> None:
    audio = AUDIO.model_copy(update={"caption": "Listen"})
    result = await EvolutionProvider(http, MemoryMappingStore()).send(_channel(evolution), outbound(audio))
    assert "caption" not in evolution.received[0].json
    assert result.degraded and "caption was dropped" in result.degraded


async def test_a_template_fails_at_once_without_calling_evolution(
    evolution: FakeEvolution, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ProviderError) as caught:
        await EvolutionProvider(http, MemoryMappingStore()).send(_channel(evolution), outbound(TEMPLATE))
    assert caught.value.failure is Failure.PERMANENT
    assert caught.value.code == "unsupported_kind"
    assert "meta channel" in caught.value.reason
    assert evolution.received == []


async def _send_error(fake: FakeEvolution, http: httpx.AsyncClient, **channel_kwargs: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await EvolutionProvider(http, MemoryMappingStore()).send(
            _channel(fake, **channel_kwargs), outbound(TEXT)
        )
    return caught.value


async def test_a_wrong_api_key_pauses_the_channel(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    error = await _send_error(evolution, http, api_key="wrong")
    assert (error.failure, error.code, error.http_status) == (Failure.PAUSE_CHANNEL, "401", 401)
    assert "API key" in error.reason


async def test_a_missing_instance_is_permanent_and_named(
    evolution: FakeEvolution, http: httpx.AsyncClient
) -> None:
    error = await _send_error(evolution, http, instance="ghost")
    assert (error.failure, error.code) == (Failure.PERMANENT, "instance_not_found")
    assert "ghost" in error.reason


async def test_a_number_not_on_whatsapp_is_permanent(
    evolution: FakeEvolution, http: httpx.AsyncClient
) -> None:
    evolution.not_on_whatsapp.add(NUMBER)
    error = await _send_error(evolution, http)
    assert (error.failure, error.code) == (Failure.PERMANENT, "number_not_on_whatsapp")
    assert NUMBER in error.reason


async def test_a_closed_instance_is_retried(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    evolution.close_instance("acme")
    error = await _send_error(evolution, http)
    assert (error.failure, error.code) == (Failure.RETRY, "500")
    assert "Connection Closed" in error.reason


async def test_rate_limit_honours_retry_after(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    evolution.fail(
        429,
        {"status": 429, "error": "Too Many Requests", "response": {"message": "slow down"}},
        headers={"Retry-After": "7"},
    )
    error = await _send_error(evolution, http)
    assert (error.failure, error.code, error.retry_after) == (Failure.RETRY, "429", 7.0)


async def test_a_bad_gateway_is_retried_and_the_next_attempt_goes_through(
    evolution: FakeEvolution, http: httpx.AsyncClient
) -> None:
    evolution.fail(502, None)
    error = await _send_error(evolution, http)
    assert error.failure is Failure.RETRY
    result = await EvolutionProvider(http, MemoryMappingStore()).send(_channel(evolution), outbound(TEXT))
    assert result.provider_message_id == evolution.sent[-1]["key"]["id"]
    assert len(evolution.received) == 2


async def test_a_timeout_is_retried(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    evolution.delay(1.0)
    error = await _send_error(evolution, http)
    assert (error.failure, error.code) == (Failure.RETRY, "timeout")


async def test_a_dropped_connection_is_retried(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    evolution.drop()
    error = await _send_error(evolution, http)
    assert (error.failure, error.code) == (Failure.RETRY, "connection")


async def test_an_unreachable_server_is_retried(http: httpx.AsyncClient) -> None:
    fake = FakeEvolution()  # never started: nothing listens on its port
    error = await _send_error(fake, http, api_key="evolution-global-key")
    assert (error.failure, error.code) == (Failure.RETRY, "connection")


async def test_lookup_is_unsupported(evolution: FakeEvolution, http: httpx.AsyncClient) -> None:
    with pytest.raises(LookupUnsupported):
        await EvolutionProvider(http, MemoryMappingStore()).lookup(_channel(evolution), outbound(TEXT))
