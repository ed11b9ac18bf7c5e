"""Small builders shared by the gateway adapter tests (no fixtures: each module owns its fakes)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import httpx
from httpx_aiohttp import AiohttpTransport

from services.sender.providers.base import ChannelConfig, Content, Outbound
from shared.events import (
    ButtonsContent,
    ListContent,
    ListRow,
    ListSection,
    MediaContent,
    ReplyButton,
    TemplateButton,
    TemplateContent,
    TemplateHeader,
    TextContent,
)

TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
RECIPIENT = "+5511999998888"


#: the transports the adapters meet: httpx's own, and the aiohttp one the sender runs with
TRANSPORTS = ["httpx", "aiohttp"]


def http_client(transport: str, timeout: float = 0.5) -> httpx.AsyncClient:
    if transport == "aiohttp":
        return httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(timeout))
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout))


def channel(
    provider: str, base_url: str, settings: Mapping[str, str], credentials: Mapping[str, str]
) -> ChannelConfig:
    return ChannelConfig(
        id=uuid.uuid4(),
        tenant_id=TENANT,
        provider=provider,
        base_url=base_url,
        settings=dict(settings),
        credentials=dict(credentials),
    )


def outbound(content: Content, to: str = RECIPIENT) -> Outbound:
    return Outbound(message_id=uuid.uuid4(), tenant_id=TENANT, to=to, content=content)


TEXT = TextContent(body="Your order #123 has shipped")
IMAGE = MediaContent(kind="image", link="https://cdn.example.com/receipt.jpg", caption="Your receipt")
DOCUMENT = MediaContent(kind="document", link="https://cdn.example.com/files/invoice.pdf", caption="Invoice")
VIDEO = MediaContent(kind="video", link="https://cdn.example.com/howto.mp4", caption="How to")
AUDIO = MediaContent(kind="audio", link="https://cdn.example.com/hello.ogg")
BUTTONS = ButtonsContent(
    body="Confirm your appointment?",
    buttons=[
        ReplyButton(id="confirm:123", title="Confirm"),
        ReplyButton(id="resched:123", title="Reschedule"),
    ],
)
LIST = ListContent(
    body="Pick a slot",
    button="Slots",
    sections=[
        ListSection(
            title="Tomorrow",
            rows=[
                ListRow(id="slot:1", title="09:00", description="Dr. Silva"),
                ListRow(id="slot:2", title="10:00"),
            ],
        ),
        ListSection(title="Friday", rows=[ListRow(id="slot:3", title="14:00")]),
    ],
)
TEMPLATE = TemplateContent(
    name="appointment_reminder",
    language="pt_BR",
    header=TemplateHeader(type="image", link="https://cdn.example.com/logo.png"),
    body_params=["Maria", "02/06 10:00"],
    buttons=[TemplateButton(index=0, sub_type="url", parameter="abc123")],
)

NUMBERED_BUTTONS = (
    "Confirm your appointment?\n\n1. Confirm\n2. Reschedule\n\nReply with the number of your choice."
)
NUMBERED_LIST = (
    "Pick a slot\n\n*Tomorrow*\n1. 09:00 – Dr. Silva\n2. 10:00\n\n*Friday*\n3. 14:00\n\n"
    "Reply with the number of your choice."
)
