"""Benchmark of campaigns: one catalogue template to many recipients, each with their own variables.

Run::

    scripts/uv run --frozen python -m bench.campaign [--recipients 100000] [--csv]

It starts its own RabbitMQ + PostgreSQL (``devtools.infra``, or the servers named by
HERALD_TEST_DATABASE_URL + HERALD_TEST_AMQP_URL), a migrated database, the fake Cloud API as a
separate process and one sender process, creates a template on a Meta channel (limits set high:
10,000 msg/s, no pair interval, no tier), has the stand-in approve it, then:

1. **campaign** — ``--recipients`` recipients with three variables each, in JSON pages of 1,000
   (``POST /v1/campaigns`` + ``/recipients``), or as one CSV upload with ``--csv``; prints
   accepted/s (first request to the last page's answer) and delivered/s to the stand-in (its
   first to last arrival, and first request to last arrival);
2. **baseline** — the same number of messages, same template with positional parameters,
   through ``POST /v1/messages/batch`` in batches of 1,000 on the same channel once the campaign is done,
   measured the same way, in the same run;
3. the ratios of 1 to 2.

A program that prints figures, not a test: it asserts nothing, but says when a message was lost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.sender import FakeMetaProcess, create_channel, phone, say, wait_count
from devtools.database import create_migrated_database, drop_database
from devtools.infra import resolve_infra
from devtools.processes import ServiceProcess, free_port, herald_cli, herald_env, wait_for

TEMPLATE = {
    "name": "tour_reminder",
    "language": "en_US",
    "category": "UTILITY",
    "body": "Hi {{name}}, the doors open at {{time}}. Your seat: {{seat}}.",
    "variables": ["name", "time", "seat"],
    "examples": {"name": "Ana", "time": "19:00", "seat": "A7"},
}
PAGE = 1000


def variables(i: int) -> dict[str, str]:
    return {"name": f"Person {i}", "time": f"{18 + i % 4}:00", "seat": f"S{i}"}


def positional(i: int) -> dict[str, Any]:
    v = variables(i)
    body = [v["name"], v["time"], v["seat"]]
    return {
        "kind": "template",
        "name": TEMPLATE["name"],
        "language": TEMPLATE["language"],
        "body_params": body,
    }


def approved_channel(client: httpx.Client, meta_url: str) -> dict[str, Any]:
    """A Meta channel with the campaign's template approved by the stand-in."""
    channel = create_channel(
        str(client.base_url),
        client.headers["Authorization"].removeprefix("Bearer "),
        meta_url,
        settings={"phone_number_id": uuid.uuid4().hex[:15], "waba_id": uuid.uuid4().hex[:15]},
    )
    created = client.post("/v1/templates", json={**TEMPLATE, "channel_id": channel["id"]})
    created.raise_for_status()
    template_id = created.json()["id"]

    def approved() -> bool:
        client.post("/v1/templates/sync", json={}).raise_for_status()
        return client.get(f"/v1/templates/{template_id}").json()["status"] == "APPROVED"

    wait_for(approved, 60, "the stand-in to approve the template")
    return channel


def run_campaign(client: httpx.Client, channel: dict[str, Any], n: int, as_csv: bool) -> tuple[float, str]:
    """Queue the campaign; returns (seconds from the first request to the last answer, its id)."""
    t0 = time.time()
    created = client.post(
        "/v1/campaigns",
        json={
            "name": "bench",
            "template": {"name": TEMPLATE["name"], "language": TEMPLATE["language"]},
            "channel_id": channel["id"],
            "recipients": []
            if as_csv
            else [{"to": phone(7, i), "variables": variables(i)} for i in range(min(PAGE, n))],
        },
    )
    created.raise_for_status()
    cid = created.json()["id"]
    queued = created.json()["page"]["queued"]
    if as_csv:
        lines = ["to,name,time,seat"] + [
            f"{phone(7, i)},{v['name']},{v['time']},{v['seat']}" for i in range(n) for v in (variables(i),)
        ]
        r = client.post(
            f"/v1/campaigns/{cid}/recipients",
            content="\n".join(lines).encode(),
            headers={"Content-Type": "text/csv"},
            timeout=600,
        )
        r.raise_for_status()
        queued += r.json()["queued"]
    else:
        for start in range(PAGE, n, PAGE):
            page = [
                {"to": phone(7, i), "variables": variables(i)} for i in range(start, min(start + PAGE, n))
            ]
            r = client.post(f"/v1/campaigns/{cid}/recipients", json={"recipients": page})
            r.raise_for_status()
            queued += r.json()["queued"]
    elapsed = time.time() - t0
    if queued != n:
        say(f"campaign queued {queued} of {n}")
    return elapsed, cid


def rates(meta: FakeMetaProcess, n: int, t0: float, accepted_s: float) -> dict[str, float]:
    stats = wait_count(meta, n, max(600, n / 50))
    count = stats["count"]
    return {
        "accepted": n / accepted_s,
        "at_provider": (count - 1) / (stats["last"] - stats["first"]) if count > 1 else 0.0,
        "end_to_end": count / (stats["last"] - t0) if count else 0.0,
        "lost": n - count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Campaign benchmark against a local Cloud API server")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--csv", action="store_true", help="upload the recipients as one CSV")
    args = parser.parse_args(argv)
    n = args.recipients

    root = Path(tempfile.mkdtemp(prefix="herald-bench-campaign-"))
    state_dir, logs = root / "infra", root / "logs"
    logs.mkdir(parents=True)
    handle = None
    db_name = server_url = None
    sender: ServiceProcess | None = None
    meta = FakeMetaProcess(logs / "fake-meta.log")
    try:
        say(f"infra under {state_dir}")
        urls, handle = resolve_infra(state_dir)
        server_url = urls.database_url
        db_name, db_url = create_migrated_database(urls.database_url, "herald_bench")
        env = herald_env(db_url, urls.amqp_url, HERALD_LOG_LEVEL="WARNING")
        meta.start()
        sender = ServiceProcess("sender", free_port(), env, logs / "sender.log")
        sender.start()
        sender.wait_ready(90)
        tenant = json.loads(herald_cli(env, "tenant", "create", f"bench-{uuid.uuid4().hex[:6]}", "--json"))
        key = tenant["api_key"]
        client = httpx.Client(base_url=sender.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)

        # 1. the campaign
        channel = approved_channel(client, meta.url)
        meta.reset()
        how = "one CSV upload" if args.csv else f"JSON pages of {PAGE:,}"
        say(f"campaign: {n:,} recipients, {how}")
        t0 = time.time()
        accepted_s, cid = run_campaign(client, channel, n, args.csv)
        campaign = rates(meta, n, t0, accepted_s)
        counts = client.get(f"/v1/campaigns/{cid}").json()["counts"]

        # 2. the baseline: the same number through the batch path
        plain = channel  # the same channel and template, after the campaign is done
        meta.reset()
        say(f"baseline: {n:,} messages through POST /v1/messages/batch")
        t0 = time.time()
        for start in range(0, n, PAGE):
            batch = [
                {"to": phone(8, i), "content": positional(i), "channel_id": plain["id"]}
                for i in range(start, min(start + PAGE, n))
            ]
            client.post("/v1/messages/batch", json={"messages": batch}).raise_for_status()
        baseline = rates(meta, n, t0, time.time() - t0)

        print(f"campaign of {n:,} recipients ({how}), 1 sender process, limits high")
        for label, figures in (("campaign", campaign), ("batch baseline", baseline)):
            print(
                f"  {label:<15} accepted {figures['accepted']:7.0f}/s   at the provider "
                f"{figures['at_provider']:6.0f}/s   request → provider {figures['end_to_end']:6.0f}/s   "
                f"not delivered {figures['lost']:.0f}"
            )
        print(
            f"  ratios campaign/baseline: accepted {campaign['accepted'] / baseline['accepted']:.2f}   "
            f"at the provider {campaign['at_provider'] / baseline['at_provider']:.2f}   "
            f"request → provider {campaign['end_to_end'] / baseline['end_to_end']:.2f}"
        )
        print(f"  campaign counts: {json.dumps({k: v for k, v in counts.items() if v})}")
        return 0
    finally:
        if sender is not None:
            sender.terminate()
        meta.stop()
        if db_name and server_url:
            try:
                drop_database(server_url, db_name)
            except Exception as exc:
                say(f"could not drop {db_name}: {exc!r}")
        if handle is not None:
            handle.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        say(f"logs kept in {logs}")


if __name__ == "__main__":
    sys.exit(main())
