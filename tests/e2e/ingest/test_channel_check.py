"""``herald run ingest`` finds the sender through ``INGEST_SENDER_URL`` and checks a webhook
source's ``channel_id`` there."""

from __future__ import annotations

import uuid

import httpx

from devtools.processes import ServiceProcess


def test_a_source_names_a_channel_of_its_tenant_only(
    ingest_process: tuple[ServiceProcess, dict[str, str]], sender_process: ServiceProcess
):
    service, tenant = ingest_process
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    with httpx.Client(base_url=sender_process.url, headers=auth, timeout=30) as sender:
        channel = sender.post("/v1/channels", json={"name": "e2e", "provider": "sandbox"})
        assert channel.status_code == 201, channel.text
    with httpx.Client(base_url=service.url, headers=auth, timeout=30) as ingest:
        for channel_id, want in ((channel.json()["id"], 201), (str(uuid.uuid4()), 422)):
            answer = ingest.post(
                "/v1/webhook-sources",
                json={
                    "provider": "chatwoot",
                    "channel_id": channel_id,
                    "secrets": {"webhook_secret": "s"},
                },
            )
            assert answer.status_code == want, answer.text
        listed = ingest.get("/v1/webhook-sources").json()["items"]
        assert [s["channel_id"] for s in listed] == [channel.json()["id"]]
