"""Benchmark of a paced channel against a provider that enforces its limit (issue 10, target 5).

Run::

    scripts/uv run --frozen python -m bench.pacing [--rates 80,20,1000] [--seconds 10] [--processes 2]

For each rate R: a stand-in Cloud API (its own process, so the bench's client does not blur its
clock) answers ``(#130429) Rate limit hit`` to any request that arrives while R or more requests
already arrived within the preceding second (a sliding window, as Meta counts), and accepts the
rest. One Meta channel with ``throughput_per_second = R`` gets ``R × --seconds`` template
messages queued while it is paused, then resumed, with ``--processes`` sender processes sharing
it. Printed per rate: the most requests and the most accepted messages within any sliding second,
the average rate of accepted messages (least-squares over all arrivals), how many 130429 answers
the stand-in gave, and how many messages were delivered. Figures, no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bench.sender import create_channel, fitted_rate, phone, post_all, say
from devtools.database import create_migrated_database, drop_database
from devtools.fake_providers.meta import ERRORS, error_body
from devtools.infra import resolve_infra
from devtools.processes import REPO, ServiceProcess, free_port, herald_cli, herald_env, wait_for

# --- the stand-in -------------------------------------------------------------------------------


def standin_app(limit: int) -> web.Application:
    arrivals: deque[float] = deque()  # every request of the last second
    accepted: list[float] = []
    requests: list[float] = []
    refused = 0

    async def send(request: web.Request) -> web.Response:
        nonlocal refused
        now = time.time()
        body = await request.json()
        requests.append(now)
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        arrivals.append(now)
        if len(arrivals) > limit:
            refused += 1
            status, message, details = ERRORS[130429]
            return web.json_response(error_body(130429, message, details), status=status)
        accepted.append(now)
        to = str(body.get("to", "")).lstrip("+")
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body.get("to"), "wa_id": to}],
                "messages": [{"id": "wamid." + uuid.uuid4().hex, "message_status": "accepted"}],
            }
        )

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"accepted": accepted, "requests": requests, "refused": refused})

    async def reset(_: web.Request) -> web.Response:
        nonlocal refused
        arrivals.clear()
        accepted.clear()
        requests.clear()
        refused = 0
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", send)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    return app


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events within any window of ``window`` seconds (half-open, sliding)."""
    ordered = sorted(times)
    best = 0
    for i, t in enumerate(ordered):
        best = max(best, bisect.bisect_left(ordered, t + window) - i)
    return best


class StandIn:
    def __init__(self, limit: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.pacing", "--serve", str(self.port), "--limit", str(limit)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                start_new_session=True,
            )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/_stats", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 20, "the stand-in provider")

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_stats", timeout=60).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# --- one rate -----------------------------------------------------------------------------------


def run_rate(rate: int, seconds: float, urls: list[str], key: str, logs: Path) -> str:
    standin = StandIn(rate, logs / f"standin-{rate}.log")
    try:
        n = int(rate * seconds)
        channel = create_channel(urls[0], key, standin.url, throughput_per_second=rate)
        auth = {"Authorization": f"Bearer {key}"}
        patch = f"{urls[0]}/v1/channels/{channel['id']}"
        httpx.patch(patch, json={"paused": True}, headers=auth).raise_for_status()
        asyncio.run(post_all(urls, key, channel["id"], [phone(40 + rate % 50, i) for i in range(n)], 32))
        say(f"rate {rate}: {n} messages queued, resuming the channel")
        httpx.patch(patch, json={"paused": False}, headers=auth).raise_for_status()
        deadline = time.monotonic() + seconds * 4 + 60
        last, stall = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = len(standin.stats()["accepted"])
            if got >= n:
                break
            if got != last:
                last, stall = got, time.monotonic()
            elif time.monotonic() - stall > 20:
                say(f"rate {rate}: no progress for 20 s at {got}/{n}")
                break
            time.sleep(0.3)
        time.sleep(1.0)  # a late retry still counts against the window
        s = standin.stats()
        accepted, requests = s["accepted"], s["requests"]
        avg = fitted_rate(sorted(accepted))
        return (
            f"paced {rate} msg/s, {len(urls)} sender processes, {n} messages: "
            f"max per sliding second {max_in_window(requests)} requests / {max_in_window(accepted)} accepted "
            f"(limit {rate}); average {avg:.2f} msg/s ({(avg / rate - 1) * 100:+.2f} %); "
            f"130429 answers {s['refused']}; delivered {len(accepted)}/{n}"
        )
    finally:
        standin.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Paced channel against a provider that enforces its limit")
    parser.add_argument("--rates", default="80,20,1000", help="comma-separated msg/s (default 80,20,1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="backlog per rate, in seconds of it")
    parser.add_argument("--processes", type=int, default=2, help="sender processes (default 2)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=80, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        web.run_app(standin_app(args.limit), host="127.0.0.1", port=args.serve, print=None)
        return 0

    root = Path(tempfile.mkdtemp(prefix="herald-bench-pacing-"))
    state_dir, logs = root / "infra", root / "logs"
    logs.mkdir(parents=True)
    handle = None
    db_name = server_url = None
    senders: list[ServiceProcess] = []
    out: list[str] = []
    try:
        say(f"infra under {state_dir}")
        infra_urls, handle = resolve_infra(state_dir)
        server_url = infra_urls.database_url
        db_name, db_url = create_migrated_database(infra_urls.database_url, "herald_bench")
        env = herald_env(db_url, infra_urls.amqp_url, HERALD_LOG_LEVEL="WARNING")
        senders = [
            ServiceProcess("sender", free_port(), env, logs / f"sender-{i}.log")
            for i in range(args.processes)
        ]
        for s in senders:
            s.start()
        for s in senders:
            s.wait_ready(90)
        tenant = json.loads(herald_cli(env, "tenant", "create", f"bench-{uuid.uuid4().hex[:6]}", "--json"))
        urls = [s.url for s in senders]
        for rate in (int(r) for r in args.rates.split(",")):
            line = run_rate(rate, args.seconds, urls, tenant["api_key"], logs)
            say(line)
            out.append(line)
        print("\n".join(out))
        return 0
    finally:
        for s in senders:
            s.terminate()
        if server_url is not None and db_name is not None:
            try:
                drop_database(server_url, db_name)
            except Exception as exc:
                say(f"could not drop {db_name}: {exc!r}")
        if handle is not None:
            handle.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        say(f"logs kept in {logs}")


if __name__ == "__main__":
    raise SystemExit(main())
