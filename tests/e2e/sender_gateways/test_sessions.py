"""Gateway sessions, services as processes: a WAHA and an Evolution API stand-in whose WhatsApp
session drops. The channel pauses, messages wait, the console gets the QR code, the session
comes back and the waiting messages go out — each once, counted at the stand-in.

Two ways Herald learns of a drop: the gateway's webhook (``session.status`` /
``connection.update`` through ingest), or — the webhook missed — the gateway refusing a send,
with the return seen by the session poll (``SENDER_SESSION_POLL_SECONDS``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.fake_providers._gateway import QR_PNG, FakeGateway
from devtools.fake_providers.evolution import FakeEvolution
from devtools.fake_providers.waha import FakeWaha
from devtools.processes import ServiceProcess, free_port, ingest_env
from herald.services import SERVICES
from tests.conftest import Infra
from tests.e2e.conftest import Herald, herald_cli, wait_for

pytestmark = pytest.mark.e2e

WAHA_HMAC = "waha-hook-key"
EVOLUTION_HOOK = "evo-hook-secret"


class Gateways:
    """The WAHA and Evolution stand-ins on their own thread and loop (the test's HTTP is sync)."""

    def __init__(self) -> None:
        self.waha = FakeWaha(api_key="waha-s-key", sessions={"sales": "WORKING", "support": "WORKING"})
        self.evolution = FakeEvolution(api_key="evo-s-key", instances={"acme": "t1", "beta": "t2"})
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-sessions", daemon=True)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _all(self) -> list[FakeGateway]:
        return [self.waha, self.evolution]

    def start(self) -> None:
        self._thread.start()
        for fake in self._all():
            self.run(fake.start())

    def stop(self) -> None:
        for fake in self._all():
            self.run(fake.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def herald(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    """The four services, with a session poll every 2 s (the missed-webhook case)."""
    tmp = Path(tmp_path_factory.mktemp("herald-sessions"))
    ports = {name: free_port() for name in SERVICES}
    env = infra.service_env(
        SENDER_SENDING_LEASE_SECONDS="3",
        SENDER_SESSION_POLL_SECONDS="2",
        HERALD_GRACEFUL_TIMEOUT_SECONDS="10",
        **ingest_env(ports["sender"]),
    )
    services = {name: ServiceProcess(name, ports[name], env, tmp / f"{name}.log") for name in SERVICES}
    system = Herald(infra=infra, services=services, env=env, tmp=tmp)
    for svc in services.values():
        svc.start()
    try:
        for svc in services.values():
            svc.wait_ready()
        yield system
    finally:
        system.stop()


@pytest.fixture(scope="module")
def gateways() -> Iterator[Gateways]:
    fakes = Gateways()
    fakes.start()
    try:
        yield fakes
    finally:
        fakes.stop()


@pytest.fixture(scope="module")
def tenant(herald: Herald) -> dict[str, str]:
    return json.loads(
        herald_cli(herald.env, "tenant", "create", f"sessions-{uuid.uuid4().hex[:6]}", "--json")
    )


def _channel(herald: Herald, tenant: dict[str, str], gateways: Gateways, provider: str, name: str) -> str:
    sender = herald.client("sender", tenant["api_key"])
    if provider == "waha":
        extra = {
            "base_url": gateways.waha.base_url,
            "settings": {"session": name},
            "credentials": {"api_key": "waha-s-key"},
        }
    else:
        extra = {
            "base_url": gateways.evolution.base_url,
            "settings": {"instance": name},
            "credentials": {"api_key": "evo-s-key"},
        }
    created = sender.post("/v1/channels", json={"name": f"{provider} {name}", "provider": provider, **extra})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _webhooks_to_ingest(
    herald: Herald, tenant: dict[str, str], gateways: Gateways, provider: str, channel_id: str
) -> None:
    """A webhook source in ingest for the channel, and the stand-in posting its webhooks there."""
    ingest = herald.client("ingest", tenant["api_key"])
    secrets = {"hmac_key": WAHA_HMAC} if provider == "waha" else {"header_value": EVOLUTION_HOOK}
    source = ingest.post(
        "/v1/webhook-sources", json={"provider": provider, "channel_id": channel_id, "secrets": secrets}
    )
    assert source.status_code == 201, source.text
    url = herald.services["ingest"].url + source.json()["url"]
    if provider == "waha":
        gateways.waha.configure_hmac(url, WAHA_HMAC)
    else:
        gateways.evolution.configure_webhook(url, {"apikey": EVOLUTION_HOOK})


def _drop(gateways: Gateways, provider: str, name: str, *, webhook: bool) -> None:
    if provider == "waha":
        gateways.run(gateways.waha.drop_session(name, webhook=webhook))
    else:
        gateways.run(gateways.evolution.drop_instance(name, webhook=webhook))


def _restore(gateways: Gateways, provider: str, name: str, *, webhook: bool) -> None:
    if provider == "waha":
        gateways.run(gateways.waha.restore_session(name, webhook=webhook))
    else:
        gateways.run(gateways.evolution.restore_instance(name, webhook=webhook))


def _attempts_of(gateways: Gateways, provider: str, name: str, text: str) -> list[Any]:
    """Every send request the stand-in saw carrying ``text`` on that session (refused ones too)."""
    if provider == "waha":
        found = gateways.waha.requests_to("/api/sendText", "POST")
        return [
            r
            for r in found
            if isinstance(r.json, dict) and r.json.get("session") == name and r.json.get("text") == text
        ]
    found = gateways.evolution.requests_to(f"/message/sendText/{name}", "POST")
    return [r for r in found if isinstance(r.json, dict) and r.json.get("text") == text]


def _sent_with(gateways: Gateways, provider: str, text: str) -> int:
    """Messages the stand-in accepted (and so would deliver) with ``text``."""
    if provider == "waha":
        return sum(1 for m in gateways.waha.sent if m["body"] == text)
    return sum(1 for m in gateways.evolution.sent if m["message"].get("conversation") == text)


def _send(sender: Any, channel_id: str, to: str, text: str) -> str:
    accepted = sender.post("/v1/messages", json={"to": to, "text": text, "channel_id": channel_id})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["id"]


def _status(sender: Any, message_id: str) -> dict[str, Any]:
    return sender.get(f"/v1/messages/{message_id}").json()


def _wait_sent(sender: Any, message_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = _status(sender, message_id)
        assert body["status"] != "failed", body
        return body if body["status"] in ("sent", "delivered", "read") else None

    return wait_for(check, 60, f"message {message_id} to be sent")


#: what a dropped session looks like: waiting for its QR code, or (Evolution's connection state
#: API, asked by the poll, says "close" while a QR code waits) disconnected
DOWN = ("qr", "disconnected")


def _wait_channel(sender: Any, channel_id: str, *, paused: bool, states: tuple[str, ...]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        view = sender.get(f"/v1/channels/{channel_id}").json()
        is_paused = view["breaker"] == "paused"
        return view if is_paused == paused and (view.get("session") or {}).get("state") in states else None

    return wait_for(
        check, 60, f"channel {channel_id} to be {'paused' if paused else 'running'}, session {states}"
    )


def _assert_waiting(sender: Any, message_id: str) -> None:
    body = _status(sender, message_id)
    assert body["status"] == "queued", body
    if body.get("waiting") is not None:  # the message view's waiting reason, where it exists
        assert body["waiting"]["reason"] == "paused", body


def _assert_qr(sender: Any, channel_id: str) -> None:
    session = sender.get(f"/v1/channels/{channel_id}/session")
    assert session.status_code == 200, session.text
    body = session.json()
    assert body["state"] in ("qr", "disconnected"), body
    image = body["qr"]["image"]
    prefix = "data:image/png;base64,"
    assert image.startswith(prefix), body
    assert base64.b64decode(image[len(prefix) :]) == QR_PNG


@pytest.mark.parametrize(("provider", "name"), [("waha", "sales"), ("evolution", "acme")])
def test_a_dropped_session_pauses_the_channel_serves_the_qr_code_and_sends_the_waiting_messages_once(
    herald: Herald, gateways: Gateways, tenant: dict[str, str], provider: str, name: str
) -> None:
    sender = herald.client("sender", tenant["api_key"])
    channel_id = _channel(herald, tenant, gateways, provider, name)
    _webhooks_to_ingest(herald, tenant, gateways, provider, channel_id)
    to = "+5511999990011" if provider == "waha" else "+5511999990012"

    before = f"before the drop ({provider})"
    _wait_sent(sender, _send(sender, channel_id, to, before))
    assert _sent_with(gateways, provider, before) == 1

    _drop(gateways, provider, name, webhook=True)
    assert all(status == 200 for status, _ in getattr(gateways, provider).webhooks), (
        "ingest took the webhooks"
    )
    paused = _wait_channel(sender, channel_id, paused=True, states=DOWN)
    assert "QR code" in paused["pause_reason"]
    _assert_qr(sender, channel_id)

    texts = [f"while down {i} ({provider})" for i in range(3)]
    ids = [_send(sender, channel_id, to, t) for t in texts]
    for message_id in ids:
        _assert_waiting(sender, message_id)

    _restore(gateways, provider, name, webhook=True)
    for message_id in ids:
        _wait_sent(sender, message_id)
    view = _wait_channel(sender, channel_id, paused=False, states=("connected",))
    assert view["pause_reason"] is None
    for text in texts:
        assert _sent_with(gateways, provider, text) == 1, text
        # nothing was sent into the dead session: the one request is the one that went out
        assert len(_attempts_of(gateways, provider, name, text)) == 1, text
    assert sender.get(f"/v1/channels/{channel_id}/session").json()["qr"] is None


@pytest.mark.parametrize(("provider", "name"), [("waha", "support"), ("evolution", "beta")])
def test_a_send_refused_by_a_dead_session_waits_and_the_poll_sees_the_session_back(
    herald: Herald, gateways: Gateways, tenant: dict[str, str], provider: str, name: str
) -> None:
    """No webhook: the gateway's refusal pauses the channel and requeues the message (it is not
    failed), and the session poll notices the session is back."""
    sender = herald.client("sender", tenant["api_key"])
    channel_id = _channel(herald, tenant, gateways, provider, name)
    to = "+5511999990021" if provider == "waha" else "+5511999990022"
    # the channel's session is known connected first (the poll)
    _wait_channel(sender, channel_id, paused=False, states=("connected",))

    _drop(gateways, provider, name, webhook=False)
    text = f"refused first ({provider})"
    message_id = _send(sender, channel_id, to, text)
    # the gateway refuses the send (or, rarely, the poll sees the drop first and nothing is sent)
    _wait_channel(sender, channel_id, paused=True, states=DOWN)
    refused = len(_attempts_of(gateways, provider, name, text))
    assert refused <= 1
    _assert_waiting(sender, message_id)
    _assert_qr(sender, channel_id)

    _restore(gateways, provider, name, webhook=False)
    message = _wait_sent(sender, message_id)
    _wait_channel(sender, channel_id, paused=False, states=("connected",))
    assert _sent_with(gateways, provider, text) == 1
    assert len(_attempts_of(gateways, provider, name, text)) == refused + 1, "sent once after the refusal"
    assert [h["status"] for h in message["history"]].count("sent") == 1
    assert message["attempts"] == 1, "the refused attempt does not count"


def test_a_session_and_an_operator_never_undo_each_others_pause(
    herald: Herald, gateways: Gateways, tenant: dict[str, str]
) -> None:
    sender = herald.client("sender", tenant["api_key"])
    gateways.waha.sessions["ops"] = "WORKING"
    channel_id = _channel(herald, tenant, gateways, "waha", "ops")
    _webhooks_to_ingest(herald, tenant, gateways, "waha", channel_id)
    _wait_channel(sender, channel_id, paused=False, states=("connected",))

    # an operator's pause outlives a session that drops and comes back
    held = sender.patch(f"/v1/channels/{channel_id}", json={"paused": True})
    assert held.status_code == 200, held.text
    _drop(gateways, "waha", "ops", webhook=True)
    _wait_channel(sender, channel_id, paused=True, states=DOWN)
    text = "held by the operator"
    message_id = _send(sender, channel_id, "+5511999990031", text)
    _restore(gateways, "waha", "ops", webhook=True)
    view = _wait_channel(sender, channel_id, paused=True, states=("connected",))
    assert view["pause_reason"] == "paused by an operator"
    _assert_waiting(sender, message_id)

    # the session's pause outlives an operator's resume while the session is down
    _drop(gateways, "waha", "ops", webhook=True)
    _wait_channel(sender, channel_id, paused=True, states=DOWN)
    resumed = sender.patch(f"/v1/channels/{channel_id}", json={"paused": False})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["breaker"] == "paused" and "QR code" in resumed.json()["pause_reason"]
    _assert_waiting(sender, message_id)

    _restore(gateways, "waha", "ops", webhook=True)
    _wait_sent(sender, message_id)
    _wait_channel(sender, channel_id, paused=False, states=("connected",))
    assert _sent_with(gateways, "waha", text) == 1
    assert len(_attempts_of(gateways, "waha", "ops", text)) == 1
