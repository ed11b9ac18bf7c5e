"""`make up` as a new user runs it: a `kill -9` of the sender leaves the other services, the
broker and the database running; the sender is started again, says so, and serves again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from devtools.processes import REPO, free_port, wait_for

pytestmark = pytest.mark.e2e

NAMES = ("ingest", "scheduler", "pipeline", "sender", "console")


def service_pid(name: str, port: int) -> int | None:
    """The pid of `herald run NAME` listening on PORT (from /proc: cmdline and environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"herald.cli" not in cmdline or name.encode() not in cmdline:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{name.upper()}_PORT={port}".encode() in environ:
            return int(entry.name)
    return None


def test_a_killed_service_is_restarted_and_the_rest_keep_running(tmp_path: Path) -> None:
    ports = {name: free_port() for name in NAMES}
    env = {
        **os.environ,
        "HERALD_STATE_DIR": str(tmp_path / "state"),
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    for var in ("HERALD_DATABASE_URL", "HERALD_AMQP_URL"):
        env.pop(var, None)
    up = subprocess.Popen(
        [sys.executable, "-m", "devtools.up", "--no-docker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Press Ctrl-C" in line for line in lines), 240, "make up to start")
        before = {name: service_pid(name, port) for name, port in ports.items()}
        assert all(before.values()), before
        os.kill(before["sender"], signal.SIGKILL)
        wait_for(lambda: any("sender restarted" in line for line in lines), 60, "the sender to restart")
        sender = f"http://127.0.0.1:{ports['sender']}"

        def sender_ready() -> bool:
            try:
                return httpx.get(f"{sender}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(sender_ready, 90, "the restarted sender to be ready")
        assert up.poll() is None, "make up must keep running"
        after = {name: service_pid(name, port) for name, port in ports.items()}
        assert after["sender"] not in (None, before["sender"])
        assert {n: p for n, p in after.items() if n != "sender"} == {
            n: p for n, p in before.items() if n != "sender"
        }, "the other services must not have been restarted"
        for name in ("ingest", "scheduler", "pipeline"):  # broker and database still answer
            assert httpx.get(f"http://127.0.0.1:{ports[name]}/readyz", timeout=5).status_code == 200
        said = "".join(lines)
        assert "sender exited with -9; the others keep running" in said, said[-2000:]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
