"""Delivery analytics after a mixed run on the Meta stand-in: every figure equals the count taken
from the messages' own views (GET /v1/messages/{id}), in every grouping; bad queries get a 422."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.sender.conftest import SenderSystem, wait_status

pytestmark = pytest.mark.e2e

OUT = {"sent", "delivered", "read"}
FINAL = {"sent", "delivered", "read", "failed"}


def phone(i: int) -> str:
    return f"+55219{i:08d}"


def template(name: str) -> dict:
    return {"kind": "template", "name": name, "language": "en_US"}


def expected(views: list[dict], key) -> dict:
    """The figures counted from the views, per key (``key(view)``) and in total (key None)."""
    out: dict = {}
    for v in views:
        for k in (key(v), "__total__"):
            g = out.setdefault(k, Counter())
            g["requested"] += 1
            was_sent = v["status"] in OUT or (v["status"] == "failed" and v["provider_message_id"])
            g["sent"] += bool(was_sent)
            g["delivered"] += v["status"] in ("delivered", "read")
            g["read"] += v["status"] == "read"
            g["failed"] += v["status"] == "failed"
    return out


FIELDS = ("requested", "sent", "delivered", "read", "failed")


def figures(g: dict) -> dict:
    return {f: g[f] for f in FIELDS}


def test_figures_match_the_messages_statuses_in_every_grouping(system: SenderSystem):
    tenant_id, key = system.tenant("analytics")
    client = system.client(key)
    first = system.meta_channel(client)
    second = system.meta_channel(client)
    ids: list[str] = []
    plan = []  # (channel, template, what happens)
    for i in range(24):
        channel = first if i % 3 else second
        name = ("order_update", "receipt", "reminder")[i % 3]
        fate = ("sent", "delivered", "read", "failed", "failed_after", "delivered")[i % 6]
        plan.append((channel, name, fate))
        if fate == "failed":
            system.meta.fail_next(131026, to=phone(i).lstrip("+"))
        r = client.post(
            "/v1/messages", json={"to": phone(i), "content": template(name), "channel_id": channel["id"]}
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    # one window-closed text refused before the provider (a Herald code, not Meta's)
    refused = client.post("/v1/messages", json={"to": phone(99), "text": "hi", "channel_id": first["id"]})
    ids.append(refused.json()["id"])

    for mid, (_, _, fate) in zip(ids, plan, strict=False):
        if fate == "failed":
            wait_status(client, mid, "failed", 30)
            continue
        wamid = wait_status(client, mid, "sent", 30)["provider_message_id"]
        steps = {"delivered": ["delivered"], "read": ["delivered", "read"], "failed_after": ["failed"]}
        for s in steps.get(fate, []):
            system.publish(
                "delivery.status.v1",
                tenant_id,
                {
                    "provider": "meta",
                    "provider_message_id": wamid,
                    "status": s,
                    "at": datetime.now(UTC).isoformat(),
                    **({"error_code": "131049", "reason": "ecosystem"} if s == "failed" else {}),
                },
            )
    for mid, (_, _, fate) in zip(ids, plan, strict=False):
        want = {"failed_after": "failed"}.get(fate, fate)
        wait_status(client, mid, want, 30)
    wait_status(client, ids[-1], "failed", 30)

    views = [client.get(f"/v1/messages/{m}").json() for m in ids]
    assert all(v["status"] in FINAL for v in views)
    tz = "America/Sao_Paulo"
    today = datetime.now(ZoneInfo(tz)).date().isoformat()

    def analytics(group_by: str) -> dict:
        r = client.get(
            "/v1/analytics/messages", params={"from": today, "to": today, "tz": tz, "group_by": group_by}
        )
        assert r.status_code == 200, r.text
        return r.json()

    groupings = {
        "day": lambda v: datetime.fromisoformat(v["created_at"]).astimezone(ZoneInfo(tz)).date().isoformat(),
        "channel": lambda v: v["channel_id"],
        "template": lambda v: (v["sent_content"] or v["content"] or {}).get("name"),
        "origin": lambda v: v["origin"],
    }
    for group_by, keyf in groupings.items():
        body = analytics(group_by)
        want = expected(views, keyf)
        assert (body["from"], body["to"], body["tz"], body["group_by"]) == (today, today, tz, group_by)
        assert figures(body["totals"]) == figures(want["__total__"]), group_by
        got = {g["key"]: figures(g) for g in body["groups"]}
        assert got == {k: figures(v) for k, v in want.items() if k != "__total__"}, group_by

    totals = analytics("day")["totals"]

    # the percentiles are of the messages that went out (and were delivered), read off histograms
    # of ±2.5 %: each lies within the real times each message shows (created → sent → delivered,
    # as Herald recorded them), not pulled down by the messages that never went out or were never
    # delivered
    def ms(later: str | None, earlier: str | None) -> float | None:
        if later is None or earlier is None:
            return None
        return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds() * 1000

    queue = [q for v in views if (q := ms(v["sent_at"], v["created_at"])) is not None]
    delivery = [d for v in views if (d := ms(v["delivered_at"], v["sent_at"])) is not None]
    # and a message has the times its history says it should
    for v in views:
        first = {h["status"]: h["at"] for h in reversed(v["history"])}
        if v["delivered_at"] is not None:
            assert "delivered" in first and v["sent_at"] is not None
        assert (v["sent_at"] is None) == (not {"sent", "delivered", "read"} & first.keys()), v
    assert len(delivery) == 12
    for name, real in (("queue_time_ms", queue), ("delivery_time_ms", delivery)):
        for p in ("p50", "p95"):
            got = totals[name][p]
            assert min(real) / 1.03 <= got <= max(real) * 1.03, (name, p, got, min(real), max(real))
    assert totals["requested"] == 25 and totals["failed"] == 9  # 4 at Meta, 4 after the send, 1 window
    assert totals["queue_time_ms"]["p50"] is not None and totals["queue_time_ms"]["p95"] >= 0
    assert totals["delivery_time_ms"]["p50"] is not None
    assert totals["read_rate"] == round(totals["read"] / totals["delivered"], 4)
    failures = {f["code"]: f for f in analytics("day")["top_failures"]}
    assert failures["131026"]["count"] == 4 and "deliver" in failures["131026"]["meaning"].lower()
    assert failures["131049"]["count"] == 4
    assert failures["window_closed"]["count"] == 1 and "24-hour" in failures["window_closed"]["meaning"]

    hours = analytics("hour")
    assert len(hours["groups"]) == 24 and sum(g["requested"] for g in hours["groups"]) == 25

    # another tenant sees none of it
    _, other_key = system.tenant("analytics-other")
    other = system.client(other_key).get(
        "/v1/analytics/messages", params={"from": today, "to": today, "tz": tz}
    )
    assert other.json()["totals"]["requested"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"group_by": "week"}, "group_by"),
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "to"),
        ({"from": "2026-01-01", "to": "2026-03-01", "group_by": "hour"}, "group_by"),
    ],
)
def test_a_bad_period_time_zone_or_grouping_gets_a_422_naming_it(system: SenderSystem, params, field):
    _, key = system.tenant("analytics-bad")
    r = system.client(key).get("/v1/analytics/messages", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(f"{field}:")


def test_an_empty_period_has_every_day_and_null_times(system: SenderSystem):
    _, key = system.tenant("analytics-empty")
    r = system.client(key).get(
        "/v1/analytics/messages", params={"from": "2026-03-28", "to": "2026-03-30", "tz": "Europe/Lisbon"}
    )
    body = r.json()
    assert [g["key"] for g in body["groups"]] == ["2026-03-28", "2026-03-29", "2026-03-30"]
    assert body["totals"]["queue_time_ms"] == {"mean": None, "p50": None, "p95": None}
    assert body["totals"]["read_rate"] is None and body["top_failures"] == []
    # the spring-forward day has 23 local hours
    hours = (
        system.client(key)
        .get(
            "/v1/analytics/messages",
            params={"from": "2026-03-29", "to": "2026-03-29", "tz": "Europe/Lisbon", "group_by": "hour"},
        )
        .json()
    )
    assert len(hours["groups"]) == 23
