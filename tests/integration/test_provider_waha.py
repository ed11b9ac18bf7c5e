"""The WAHA adapter over real HTTP against the local WAHA server: what the server receives for
each message kind, and how each of its error answers is classified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devtools.fake_providers.waha import FakeWaha
from services.sender.providers.base import Failure, LookupUnsupported, MemoryMappingStore, ProviderError
from services.sender.providers.waha import WahaProvider
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

CHAT = "5511999998888@c.us"
BASE = {"session": "sales", "chatId": CHAT}


@pytest.fixture
async def waha() -> AsyncIterator[FakeWaha]:
    async with FakeWaha(api_key="secret", sessions={"sales": "WORKING"}) as fake:
        yield fake


@pytest.fixture(params=TRANSPORTS)
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(request.param) as client:
        yield client


def _channel(fake: FakeWaha, *, session: str | None = "sales", api_key: str = "secret"):
    settings = {"session": session} if session else {}
    return channel("waha", fake.base_url, settings, {"api_key": api_key})


@pytest.mark.parametrize(
    ("content", "path", "body", "degraded"),
    [
        (TEXT, "/api/sendText", {**BASE, "text": TEXT.body}, None),
        (
            IMAGE,
            "/api/sendImage",
            {**BASE, "file": {"mimetype": "image/jpeg", "url": IMAGE.link}, "caption": "Your receipt"},
            None,
        ),
        (
            DOCUMENT,
            "/api/sendFile",
            {
                **BASE,
                "file": {"mimetype": "application/pdf", "url": DOCUMENT.link, "filename": "invoice.pdf"},
                "caption": "Invoice",
            },
            None,
        ),
        (
            VIDEO,
            "/api/sendVideo",
            {
                **BASE,
                "file": {"mimetype": "video/mp4", "url": VIDEO.link, "filename": "howto.mp4"},
                "caption": "How to",
            },
            None,
        ),
        (
            AUDIO,
            "/api/sendVoice",
            {**BASE, "file": {"mimetype": "audio/ogg; codecs=opus", "url": AUDIO.link}},
            None,
        ),
        (
            BUTTONS,
            "/api/sendText",
            {**BASE, "text": NUMBERED_BUTTONS},
            "quick replies sent as a numbered text list",
        ),
        (LIST, "/api/sendText", {**BASE, "text": NUMBERED_LIST}, "list sent as a numbered text list"),
    ],
    ids=["text", "image", "document", "video", "audio", "buttons", "list"],
)
async def test_each_kind_reaches_waha_as_its_contract_says(
    waha: FakeWaha, http: httpx.AsyncClient, content: Any, path: str, body: dict, degraded: str | None
) -> None:
    result = await WahaProvider(http, MemoryMappingStore()).send(_channel(waha), outbound(content))

    [request] = waha.received
    assert (request.method, request.path) == ("POST", path)
    assert request.headers["x-api-key"] == "secret"
    assert request.json == body
    assert result.provider_message_id == waha.sent[-1]["id"]
    assert result.provider_message_id.startswith(f"true_{CHAT}_")
    assert (result.degraded or "").startswith(degraded or "")
    assert (result.degraded is None) == (degraded is None)


async def test_the_session_defaults_to_default(http: httpx.AsyncClient) -> None:
    async with FakeWaha(api_key="secret") as fake:
        await WahaProvider(http, MemoryMappingStore()).send(_channel(fake, session=None), outbound(TEXT))
        assert fake.received[0].json["session"] == "default"


async def test_audio_that_is_not_opus_goes_as_a_file_and_says_so(
    waha: FakeWaha, http: httpx.AsyncClient
) -> None:
    mp3 = AUDIO.model_copy(update={"link": "https://cdn.example.com/hello.mp3"})
    result = await WahaProvider(http, MemoryMappingStore()).send(_channel(waha), outbound(mp3))
    [request] = waha.received
    assert request.path == "/api/sendFile"
    assert request.json["file"] == {"mimetype": "audio/mpeg", "url": mp3.link, "filename": "hello.mp3"}
    assert result.degraded and "OGG/Opus" in result.degraded


async def test_a_template_fails_at_once_without_calling_waha(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await WahaProvider(http, MemoryMappingStore()).send(_channel(waha), outbound(TEMPLATE))
    assert (caught.value.failure, caught.value.code) == (Failure.PERMANENT, "unsupported_kind")
    assert "meta channel" in caught.value.reason
    assert waha.received == []


async def _send_error(
    fake: FakeWaha, http: httpx.AsyncClient, to: str = "+5511999998888", **kwargs: Any
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await WahaProvider(http, MemoryMappingStore()).send(_channel(fake, **kwargs), outbound(TEXT, to=to))
    return caught.value


async def test_a_wrong_api_key_pauses_the_channel(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    error = await _send_error(waha, http, api_key="wrong")
    assert (error.failure, error.code) == (Failure.PAUSE_CHANNEL, "401")


async def test_a_missing_session_is_permanent_and_named(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    error = await _send_error(waha, http, session="ghost")
    assert (error.failure, error.code) == (Failure.PERMANENT, "session_not_found")
    assert "'ghost'" in error.reason


async def test_a_session_waiting_for_its_qr_code_pauses_the_channel(
    waha: FakeWaha, http: httpx.AsyncClient
) -> None:
    waha.set_session_status("sales", "SCAN_QR_CODE")
    error = await _send_error(waha, http)
    assert (error.failure, error.code) == (Failure.PAUSE_CHANNEL, "session_scan_qr_code")
    assert "scan its QR code" in error.reason


async def test_a_starting_session_is_retried(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    waha.set_session_status("sales", "STARTING")
    error = await _send_error(waha, http)
    assert (error.failure, error.code) == (Failure.RETRY, "session_starting")
    assert error.retry_after == 5.0


async def test_a_bad_chat_id_is_permanent(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    error = await _send_error(waha, http, to="+1")
    assert (error.failure, error.code) == (Failure.PERMANENT, "400")
    assert "Invalid chatId" in error.reason


async def test_rate_limit_honours_retry_after(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    waha.fail(
        429,
        {"statusCode": 429, "message": "ThrottlerException: Too Many Requests"},
        headers={"Retry-After": "3"},
    )
    error = await _send_error(waha, http)
    assert (error.failure, error.retry_after) == (Failure.RETRY, 3.0)


async def test_a_server_error_is_retried(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    waha.fail(500, {"statusCode": 500, "message": "Internal server error"})
    error = await _send_error(waha, http)
    assert (error.failure, error.code) == (Failure.RETRY, "500")


async def test_a_number_without_whatsapp_fails_at_once_instead_of_being_retried(
    waha: FakeWaha, http: httpx.AsyncClient
) -> None:
    waha.unregistered.add("5511912340000")
    error = await _send_error(waha, http, to="+5511912340000")
    assert (error.failure, error.code) == (Failure.PERMANENT, "not_on_whatsapp")
    assert "+5511912340000 has no WhatsApp account" in error.reason
    check = waha.requests_to("/api/contacts/check-exists", "GET")
    assert [(r.query["phone"], r.query["session"]) for r in check] == [("5511912340000", "sales")]

    # a server error for a number that has WhatsApp stays retryable (checked, then retried)
    waha.fail(500, {"statusCode": 500, "message": "Internal server error"}, path="/api/sendText")
    error = await _send_error(waha, http)
    assert (error.failure, error.code) == (Failure.RETRY, "500")


async def test_a_timeout_is_retried(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    waha.delay(1.0)
    error = await _send_error(waha, http)
    assert (error.failure, error.code) == (Failure.RETRY, "timeout")


async def test_a_dropped_connection_is_retried(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    waha.drop()
    error = await _send_error(waha, http)
    assert (error.failure, error.code) == (Failure.RETRY, "connection")


async def test_lookup_is_unsupported(waha: FakeWaha, http: httpx.AsyncClient) -> None:
    with pytest.raises(LookupUnsupported):
        await WahaProvider(http, MemoryMappingStore()).lookup(_channel(waha), outbound(TEXT))
