"""The WAHA and Evolution adapters' session calls over real HTTP against the local gateways: the
session's state and the QR code to scan, as the sender's session poll and
``GET /v1/channels/{id}/session`` ask them."""

from __future__ import annotations

import base64

import httpx
import pytest

from devtools.fake_providers._gateway import QR_PNG
from devtools.fake_providers.evolution import FakeEvolution
from devtools.fake_providers.waha import FakeWaha
from services.sender.providers.base import MemoryMappingStore
from services.sender.providers.evolution import EvolutionProvider
from services.sender.providers.gateway import SessionDown
from services.sender.providers.waha import WahaProvider
from tests.integration._gateways import TEXT, channel, outbound

QR_URL = "data:image/png;base64," + base64.b64encode(QR_PNG).decode()


async def test_waha_session_state_and_qr_code() -> None:
    async with (
        FakeWaha(api_key="k", sessions={"sales": "WORKING"}) as fake,
        httpx.AsyncClient(timeout=5) as http,
    ):
        adapter = WahaProvider(http, MemoryMappingStore())
        ch = channel("waha", fake.base_url, {"session": "sales"}, {"api_key": "k"})
        assert await adapter.session_state(ch) == ("connected", "WORKING")
        assert await adapter.session_qr(ch) is None  # a working session has no QR code

        await fake.drop_session("sales")  # no webhook URL: only the state changes
        assert await adapter.session_state(ch) == ("qr", "SCAN_QR_CODE")
        assert await adapter.session_qr(ch) == QR_URL
        with pytest.raises(SessionDown) as refused:
            await adapter.send(ch, outbound(TEXT))
        assert refused.value.state == "qr"

        ghost = channel("waha", fake.base_url, {"session": "ghost"}, {"api_key": "k"})
        assert await adapter.session_state(ghost) == ("disconnected", "NOT_FOUND")


async def test_evolution_instance_state_and_qr_code() -> None:
    async with (
        FakeEvolution(api_key="k", instances={"acme": "t"}) as fake,
        httpx.AsyncClient(timeout=5) as http,
    ):
        adapter = EvolutionProvider(http, MemoryMappingStore())
        ch = channel("evolution", fake.base_url, {"instance": "acme"}, {"api_key": "k"})
        assert await adapter.session_state(ch) == ("connected", "open")
        assert await adapter.session_qr(ch) is None

        await fake.drop_instance("acme")
        assert await adapter.session_state(ch) == ("disconnected", "close")
        assert await adapter.session_qr(ch) == QR_URL
        with pytest.raises(SessionDown) as refused:
            await adapter.send(ch, outbound(TEXT))
        assert refused.value.state == "disconnected"

        await fake.restore_instance("acme")
        assert await adapter.session_state(ch) == ("connected", "open")
