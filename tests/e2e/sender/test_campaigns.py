"""Campaigns (issue 12 §3) through the real sender process and the Meta stand-in: one catalogue
template to many recipients, each with their own variables, in pages or a CSV; refusals with
their reasons; counts by status that match what the provider received and the statuses that
came back; pause holds everything not yet sent until resume; cancel ends it; bad input stores
nothing."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.processes import wait_for
from tests.e2e.sender.conftest import SenderSystem
from tests.e2e.sender.test_templates import synced_status

pytestmark = pytest.mark.e2e

TEMPLATE = {
    "name": "concert_reminder",
    "language": "en_US",
    "category": "UTILITY",
    "body": "Hi {{name}}, the doors open at {{time}}. Your seat: {{seat}}.",
    "variables": ["name", "time", "seat"],
    "examples": {"name": "Ana", "time": "19:00", "seat": "A7"},
}


def phone(block: int, i: int) -> str:
    return f"+55119{block:02d}{i:06d}"


def variables(i: int) -> dict[str, str]:
    # not the template's order: the sender maps them onto it
    return {"seat": f"S{i}", "time": f"{18 + i % 4}:00", "name": f"Person {i}"}


def meta_campaign_channel(system: SenderSystem, client: httpx.Client, **extra: Any) -> dict[str, Any]:
    """A Meta channel with the campaign template approved on its WABA."""
    channel = system.meta_channel(
        client, settings={"phone_number_id": uuid.uuid4().hex[:15], "waba_id": uuid.uuid4().hex[:15]}, **extra
    )
    created = client.post("/v1/templates", json={**TEMPLATE, "channel_id": channel["id"]})
    assert created.status_code == 201, created.text
    synced_status(client, created.json()["id"], "APPROVED")
    return channel


def recipients(block: int, indices: range) -> list[dict[str, Any]]:
    return [{"to": phone(block, i), "variables": variables(i)} for i in indices]


def create(client: httpx.Client, channel: dict[str, Any], page: list[dict[str, Any]], **extra: Any) -> dict:
    body = {
        "name": "spring tour",
        "template": {"name": TEMPLATE["name"], "language": TEMPLATE["language"]},
        "channel_id": channel["id"],
        "recipients": page,
        **extra,
    }
    response = client.post("/v1/campaigns", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def campaign(client: httpx.Client, campaign_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()


def sent_params(system: SenderSystem, pnid: str) -> dict[str, list[str]]:
    """What the stand-in received on the channel: recipient (digits) → body parameters."""
    out: dict[str, list[str]] = {}
    for r in system.meta.received_for(pnid):
        template = r["body"]["template"]
        body = next(c for c in template["components"] if c["type"] == "body")
        assert r["body"]["to"] not in out, f"{r['body']['to']} received twice"
        out[r["body"]["to"]] = [p["text"] for p in body["parameters"]]
    return out


def test_a_campaign_reaches_every_recipient_with_their_variables_and_counts_follow_the_statuses(
    system: SenderSystem,
):
    tenant_id, key = system.tenant("campaign-big")
    client = system.client(key)
    channel = meta_campaign_channel(system, client)
    pnid = channel["settings"]["phone_number_id"]
    n = int(os.environ.get("HERALD_TEST_CAMPAIGN_RECIPIENTS", "10000"))

    first = create(client, channel, recipients(1, range(0, 1000)))
    cid = first["id"]
    assert first["page"] == {"campaign_id": cid, "queued": 1000, "refused": 0, "refusals": []}
    for start in range(1000, n, 1000):  # the rest in pages of 1,000
        page = recipients(1, range(start, min(start + 1000, n)))
        response = client.post(f"/v1/campaigns/{cid}/recipients", json={"recipients": page})
        assert response.status_code == 202, response.text
        assert response.json()["queued"] == len(page)

    done = wait_for(
        lambda: (c := campaign(client, cid))["state"] == "completed" and c,
        120,
        "the campaign to complete",
    )
    received = sent_params(system, pnid)
    assert len(received) == n
    assert done["accepted"] == n and done["refused"] == 0
    assert done["counts"]["sent"] == n == len(system.meta.received_for(pnid))
    for i in (0, 1, 999, 1000, n - 1):
        v = variables(i)
        assert received[phone(1, i).lstrip("+")] == [v["name"], v["time"], v["seat"]]

    # the provider's statuses come back: the counts follow them
    wamids = [r["id"] for r in system.meta.received_for(pnid)]
    for wamid in wamids[:30]:
        system.publish("delivery.status.v1", tenant_id, status_event(wamid, "delivered"))
    for wamid in wamids[:10]:
        system.publish("delivery.status.v1", tenant_id, status_event(wamid, "read"))
    for wamid in wamids[30:35]:
        system.publish("delivery.status.v1", tenant_id, status_event(wamid, "failed", error_code="131049"))
    want = {"sent": n - 35, "delivered": 20, "read": 10, "failed": 5}
    wait_for(
        lambda: {s: campaign(client, cid)["counts"][s] for s in want} == want,
        30,
        f"the counts to be {want}",
    )
    listed = client.get("/v1/campaigns").json()["items"]
    assert [c["id"] for c in listed] == [cid]


def status_event(wamid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "meta",
        "provider_message_id": wamid,
        "status": status,
        "at": datetime.now(UTC).isoformat(),
        **extra,
    }


def settled(system: SenderSystem, pnid: str, quiet: float) -> int:
    """The stand-in's count once it has not grown for ``quiet`` seconds (in-flight sends done)."""
    last = [len(system.meta.received_for(pnid)), time.monotonic()]

    def check() -> int | None:
        now = len(system.meta.received_for(pnid))
        if now != last[0]:
            last[:] = [now, time.monotonic()]
            return None
        return now if time.monotonic() - last[1] >= quiet else None

    return wait_for(check, 30, "the stand-in's count to settle")


def test_paused_nothing_more_goes_out_until_resumed_and_the_pace_holds(system: SenderSystem):
    _, key = system.tenant("campaign-pause")
    client = system.client(key)
    rate = 40
    channel = meta_campaign_channel(system, client, throughput_per_second=rate)
    pnid = channel["settings"]["phone_number_id"]
    n = 300
    cid = create(client, channel, recipients(2, range(n)))["id"]

    wait_for(lambda: len(system.meta.received_for(pnid)) >= 40, 30, "the first sends")
    paused = client.post(f"/v1/campaigns/{cid}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused" and paused.json()["messages"] > 0
    # what a dispatcher had already taken finishes; then nothing more, for 25 send intervals
    at_pause = settled(system, pnid, quiet=25 / rate)
    view = campaign(client, cid)
    assert view["state"] == "paused"
    assert view["counts"]["held"] == n - at_pause, view["counts"]
    assert view["counts"]["sent"] == at_pause
    assert at_pause < n
    # a page added while paused is held too
    extra = client.post(
        f"/v1/campaigns/{cid}/recipients", json={"recipients": recipients(2, range(n, n + 10))}
    )
    assert extra.status_code == 202, extra.text
    assert campaign(client, cid)["counts"]["held"] == n + 10 - at_pause
    assert len(system.meta.received_for(pnid)) == at_pause

    resumed = client.post(f"/v1/campaigns/{cid}/resume")
    assert resumed.status_code == 200 and resumed.json()["messages"] == n + 10 - at_pause
    wait_for(lambda: campaign(client, cid)["state"] == "completed", 60, "the campaign to complete")
    assert len(sent_params(system, pnid)) == n + 10  # each recipient once

    # the channel's throughput held: no second window of the stand-in saw more than the rate
    times = sorted(r["at"] for r in system.meta.received_for(pnid))
    j, worst = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    assert worst <= rate + 1, worst


def test_cancel_fails_what_was_not_sent_and_takes_no_more_recipients(system: SenderSystem):
    _, key = system.tenant("campaign-cancel")
    client = system.client(key)
    channel = meta_campaign_channel(system, client, throughput_per_second=20)
    pnid = channel["settings"]["phone_number_id"]
    n = 200
    cid = create(client, channel, recipients(3, range(n)))["id"]
    wait_for(lambda: len(system.meta.received_for(pnid)) >= 5, 30, "the first sends")

    cancelled = client.post(f"/v1/campaigns/{cid}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    at_cancel = settled(system, pnid, quiet=1.0)
    view = campaign(client, cid)
    assert view["state"] == "cancelled"
    assert view["counts"]["cancelled"] == cancelled.json()["messages"] == n - at_cancel
    assert view["counts"]["sent"] == at_cancel
    assert view["counts"]["queued"] == view["counts"]["held"] == view["counts"]["sending"] == 0
    assert at_cancel < n

    # a cancelled recipient's message says why
    items = client.get("/v1/messages", params={"status": "failed", "limit": 1}).json()["items"]
    assert items and items[0]["error_code"] == "campaign_cancelled"

    more = client.post(f"/v1/campaigns/{cid}/recipients", json={"recipients": recipients(3, range(n, n + 1))})
    assert more.status_code == 409 and "cancelled" in more.json()["message"], more.text
    assert client.post(f"/v1/campaigns/{cid}/resume").status_code == 409
    assert len(system.meta.received_for(pnid)) == at_cancel


def test_refusals_are_answered_with_their_reasons_and_a_page_sent_again_is_not_queued_twice(
    system: SenderSystem,
):
    _, key = system.tenant("campaign-refusals")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()
    assert client.post("/v1/templates", json={**TEMPLATE, "channel_id": sandbox["id"]}).status_code == 201
    opted = phone(4, 2)
    assert client.post("/v1/opt-outs", json={"phone": opted}).status_code == 201

    page = [
        {"to": phone(4, 0), "variables": variables(0)},
        {"to": "12345", "variables": variables(1)},
        {"to": opted, "variables": variables(2)},
        {"to": phone(4, 0), "variables": variables(3)},
        {"to": phone(4, 4), "variables": variables(4)},
    ]
    first = create(client, sandbox, page)
    cid = first["id"]
    assert first["page"]["queued"] == 2 and first["page"]["refused"] == 3
    assert [(r["index"], r["reason"]) for r in first["page"]["refusals"]] == [
        (1, "not_e164"),
        (2, "opted_out"),
        (3, "duplicate"),
    ]

    # across pages, a recipient already in the campaign is a duplicate; a repeated page with its
    # Idempotency-Key is the first answer again, and queues nothing
    again = [{"to": phone(4, 4), "variables": variables(4)}, {"to": phone(4, 5), "variables": variables(5)}]
    headers = {"Idempotency-Key": "page-2"}
    answers = [
        client.post(f"/v1/campaigns/{cid}/recipients", json={"recipients": again}, headers=headers)
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["queued"] == 1 and answers[0].json()["refusals"][0]["reason"] == "duplicate"
    assert answers[1].headers.get("Idempotent-Replayed") == "true"
    other = client.post(f"/v1/campaigns/{cid}/recipients", json={"recipients": again[:1]}, headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["message"]

    wait_for(lambda: campaign(client, cid)["state"] == "completed", 30, "the campaign to complete")
    view = campaign(client, cid)
    assert (view["accepted"], view["refused"], view["counts"]["sent"]) == (3, 4, 3)
    got = client.get("/v1/sandbox/messages", params={"limit": 100}).json()["items"]
    texts = sorted(r["text"] for r in got if r["to"] in {phone(4, 0), phone(4, 4), phone(4, 5)})
    assert texts == sorted(
        f"Hi {v['name']}, the doors open at {v['time']}. Your seat: {v['seat']}."
        for v in (variables(0), variables(4), variables(5))
    )


def test_a_csv_is_checked_whole_then_queued_and_a_bad_one_stores_nothing(system: SenderSystem):
    _, key = system.tenant("campaign-csv")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()
    assert client.post("/v1/templates", json={**TEMPLATE, "channel_id": sandbox["id"]}).status_code == 201
    cid = create(client, sandbox, [])["id"]
    csv_headers = {"Content-Type": "text/csv"}

    bad = f"to,name,time,seat\n{phone(5, 0)},Ana,19:00,A1\n{phone(5, 1)},Rui,,A2\n{phone(5, 2)},Eva,20:00\n"
    response = client.post(f"/v1/campaigns/{cid}/recipients", content=bad, headers=csv_headers)
    assert response.status_code == 422, response.text
    body = response.json()
    assert (
        "row 3" in body["message"] and "'time'" in body["message"] and "nothing was stored" in body["message"]
    )
    assert [d["field"] for d in body["details"]] == ["row 3.time", "row 4"]
    unknown = f"to,name,time,seat,colour\n{phone(5, 0)},Ana,19:00,A1,red\n"
    response = client.post(f"/v1/campaigns/{cid}/recipients", content=unknown, headers=csv_headers)
    assert response.status_code == 422 and "'colour'" in response.json()["message"]
    view = campaign(client, cid)
    assert (view["accepted"], view["refused"], sum(view["counts"].values())) == (0, 0, 0)

    good = "to,seat,name,time\n" + "".join(f"{phone(5, i)},S{i},Person {i},19:00\n" for i in range(50))
    files = {"file": ("list.csv", good.encode(), "text/csv")}
    response = client.post(f"/v1/campaigns/{cid}/recipients", files=files)
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == 50
    wait_for(lambda: campaign(client, cid)["state"] == "completed", 30, "the campaign to complete")
    got = client.get("/v1/sandbox/messages", params={"limit": 100}).json()["items"]
    assert len(got) == 50
    assert [r["text"] for r in got if r["to"] == phone(5, 7)] == [
        "Hi Person 7, the doors open at 19:00. Your seat: S7."
    ]


def test_bad_campaigns_are_refused_naming_the_problem(system: SenderSystem):
    _, key = system.tenant("campaign-bad")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()
    assert client.post("/v1/templates", json={**TEMPLATE, "channel_id": sandbox["id"]}).status_code == 201
    template = {"name": TEMPLATE["name"], "language": TEMPLATE["language"]}

    def post(**body: Any) -> httpx.Response:
        return client.post("/v1/campaigns", json={"template": template, "channel_id": sandbox["id"], **body})

    missing = post(recipients=[{"to": phone(6, 0), "variables": {"name": "Ana", "time": "19:00"}}])
    assert missing.status_code == 422 and "recipients.0.variables" in missing.json()["message"]
    assert "'seat'" in missing.json()["message"]
    extra = post(recipients=[{"to": phone(6, 0), "variables": {**variables(0), "colour": "red"}}])
    assert extra.status_code == 422 and "'colour'" in extra.json()["message"]
    nope = client.post(
        "/v1/campaigns", json={"template": {"name": "no_such", "language": "en_US"}, "recipients": []}
    )
    assert nope.status_code == 422 and "no_such" in nope.json()["message"]
    too_many = post(recipients=recipients(6, range(1001)))
    assert too_many.status_code == 422, too_many.text
    assert client.get("/v1/campaigns").json()["items"] == []  # nothing was stored

    # another tenant's campaign does not exist for this one
    cid = post(recipients=[])
    assert cid.status_code == 202
    _, other_key = system.tenant("campaign-other")
    other = system.client(other_key)
    assert other.get(f"/v1/campaigns/{cid.json()['id']}").status_code == 404
    assert other.post(f"/v1/campaigns/{cid.json()['id']}/pause").status_code == 404
    assert Counter(c["state"] for c in client.get("/v1/campaigns").json()["items"]) == {"active": 1}


def test_a_campaign_with_a_send_time_waits_for_it(system: SenderSystem):
    _, key = system.tenant("campaign-later")
    client = system.client(key)
    sandbox = client.post("/v1/channels", json={"name": "sb", "provider": "sandbox"}).json()
    assert client.post("/v1/templates", json={**TEMPLATE, "channel_id": sandbox["id"]}).status_code == 201
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    cid = create(client, sandbox, recipients(7, range(5)), send_at=send_at.isoformat())["id"]
    view = campaign(client, cid)
    assert view["send_at"] is not None and view["counts"]["queued"] == 5
    assert view["priority"] == 1  # below transactional traffic unless asked otherwise
    items = client.get("/v1/messages", params={"status": "queued"}).json()["items"]
    assert len(items) == 5 and all(m["origin"] == "campaign" for m in items)
    assert all(m["waiting"] and m["waiting"]["until"] for m in items), items[0]

    wait_for(lambda: campaign(client, cid)["state"] == "completed", 30, "the campaign to complete")
    got = client.get("/v1/sandbox/messages", params={"limit": 10}).json()["items"]
    assert len(got) == 5
    assert min(datetime.fromisoformat(r["received_at"]) for r in got) >= send_at
