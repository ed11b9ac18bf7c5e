"""The operator commands (`herald send`, `messages`, `dead-letters`, `schedules`, `channels`,
`templates`) run as an operator runs them, in a shell, against the four services running as
processes: what they print, what their `--json` says, and the exit code of each outcome."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.processes import REPO, free_port
from devtools.up import write_env_file
from tests.e2e.conftest import Herald, wait_for

pytestmark = pytest.mark.e2e
PHONE = "+5511988887777"
TOKEN = "cli-test-token"


@pytest.fixture(scope="module")
def key(herald: Herald) -> str:
    return herald.create_tenant(f"cli-ops-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def shell(herald: Herald, key: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An operator's shell: the key and the service URLs in the environment, nothing else of Herald's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env["PYTHONPATH"] = str(REPO)
    env["HERALD_API_KEY"] = key
    for name, svc in herald.services.items():
        env[f"HERALD_{name.upper()}_URL"] = svc.url
    env["HERALD_CWD"] = str(tmp_path_factory.mktemp("operator"))  # no .herald/ above it
    return env


def herald_ops(shell: dict[str, str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", *args],
        cwd=shell["HERALD_CWD"],
        env={**shell, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok_json(shell: dict[str, str], *args: str) -> Any:
    done = herald_ops(shell, *args, "--json")
    assert done.returncode == 0, f"herald {' '.join(args)}: {done.returncode} {done.stderr}"
    return json.loads(done.stdout)


def wait_status(shell: dict[str, str], message_id: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        message = ok_json(shell, "messages", "show", message_id)
        return message if message["status"] == status else None

    return wait_for(check, 60, f"message {message_id} to be {status}", interval=0.3)


class Lines:
    """A running command's stdout, line by line, readable with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def until(self, *words: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            if all(w in line for w in words):
                return line
        raise AssertionError(f"no line with {words} within {timeout}s; printed: {self.seen}")

    def rest(self, timeout: float = 30) -> list[str]:
        """Everything printed, once the command has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return self.seen
            self.seen.append(line)
        raise AssertionError(f"the command's output did not end within {timeout}s: {self.seen}")


@pytest.fixture
def tail_process(shell: dict[str, str]) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Lines:
        proc = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", "messages", "tail", *args],
            cwd=shell["HERALD_CWD"],
            env=shell,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return Lines(proc)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def sandbox_channel(herald: Herald, key: str) -> dict[str, Any]:
    with herald.client("sender", key) as sender:
        created = sender.post(
            "/v1/channels",
            json={
                "name": f"cli sandbox {uuid.uuid4().hex[:4]}",
                "provider": "sandbox",
                "pair_interval_seconds": 0,
            },
        )
    assert created.status_code == 201, created.text
    return created.json()


def test_a_second_shell_finds_the_stack_through_what_make_up_wrote(
    herald: Herald, key: str, shell: dict[str, str], tmp_path: Path
) -> None:
    urls = {name: svc.url for name, svc in herald.services.items()}
    write_env_file(tmp_path / ".herald" / "env", {"HERALD_ENVIRONMENT": "development"}, key, urls)
    folder = tmp_path / "some" / "folder"
    folder.mkdir(parents=True)
    bare = {k: v for k, v in shell.items() if not k.startswith("HERALD_")}

    done = subprocess.run(
        [sys.executable, "-m", "herald.cli", "channels", "list", "--json"],
        cwd=folder,
        env=bare,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "items" in json.loads(done.stdout)


# --- send, messages ---------------------------------------------------------------------------


def test_send_then_show_and_list_the_message_turning_sent(shell: dict[str, str]) -> None:
    accepted = ok_json(shell, "send", PHONE, "Your payment is confirmed", "--priority", "9")
    assert accepted["status"] == "queued"

    sent = wait_status(shell, accepted["id"], "sent")
    assert [h["status"] for h in sent["history"]] == ["queued", "sending", "sent"]

    shown = herald_ops(shell, "messages", "show", accepted["id"])
    assert shown.returncode == 0, shown.stderr
    assert "Your payment is confirmed" in shown.stdout and "history:" in shown.stdout
    assert [line.split()[2] for line in shown.stdout.split("history:")[1].strip().splitlines()[1:]] == [
        "queued",
        "sending",
        "sent",
    ]

    listed = herald_ops(shell, "messages", "list", "--to", PHONE)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "TO", "MESSAGE"]
    assert any(accepted["id"] in row and " sent " in row for row in rows), listed.stdout
    assert accepted["id"] in [
        m["id"] for m in ok_json(shell, "messages", "list", "--status", "sent")["items"]
    ]


def test_send_wait_prints_each_status_and_exits_when_sent(shell: dict[str, str]) -> None:
    done = herald_ops(shell, "send", PHONE, "Your code is 4417", "--wait", "sent")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("queued ")
    assert [line.split()[3] for line in lines[1:]] == ["queued", "sending", "sent"]


def test_tail_prints_a_status_change_while_it_happens(herald: Herald, key: str, shell, tail_process) -> None:
    channel = sandbox_channel(herald, key)
    paused = herald_ops(shell, "channels", "pause", channel["id"])
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout
    assert [
        c["breaker"] for c in ok_json(shell, "channels", "list")["items"] if c["id"] == channel["id"]
    ] == ["paused"]
    message_id = ok_json(shell, "send", PHONE, "Doors open at 9", "--channel", channel["id"])["id"]
    everything = tail_process("--last", "0", "--interval", "0.3")
    followed = tail_process(message_id, "--until", "sent", "--interval", "0.3")

    followed.until(message_id, "queued")  # it waits on the paused channel, while the tails watch …
    resumed = herald_ops(shell, "channels", "resume", channel["id"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "breaker closed" in resumed.stdout

    line = followed.until(message_id, "sent", "(was sending)")  # … and goes out once resumed
    assert followed.proc.wait(30) == 0, followed.proc.stderr.read() if followed.proc.stderr else ""
    assert line.split()[2] == message_id
    everything.until(message_id, "sent")

    everything.proc.send_signal(signal.SIGINT)  # Ctrl-C: a quiet stop, with its own exit code
    assert everything.proc.wait(30) == 130
    assert "Traceback" not in (everything.proc.stderr.read() if everything.proc.stderr else "")


def test_tail_json_is_one_object_per_line(shell: dict[str, str], tail_process) -> None:
    message_id = ok_json(shell, "send", PHONE, "json lines")["id"]
    lines = tail_process(message_id, "--until", "sent", "--json", "--interval", "0.3")
    assert lines.proc.wait(60) == 0
    parsed = [json.loads(line) for line in lines.rest()]
    assert [e["status"] for e in parsed][-1] == "sent"
    assert {e["id"] for e in parsed} == {message_id}


# --- dead letters -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_meta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = open(Path(tmp_path_factory.mktemp("meta")) / "meta.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_providers.meta", "--port", str(port), "--token", TOKEN],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/_fake/stats", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, "the fake Meta API")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_dead_letters_list_and_replay(herald: Herald, key: str, shell, fake_meta: str) -> None:
    with herald.client("sender", key) as sender:
        created = sender.post(
            "/v1/channels",
            json={
                "name": "meta for the cli",
                "provider": "meta",
                "base_url": fake_meta,
                "settings": {"phone_number_id": uuid.uuid4().hex[:15]},
                "credentials": {"access_token": TOKEN},
                "pair_interval_seconds": 0,
            },
        )
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    httpx.post(f"{fake_meta}/_fake/errors", json={"code": 131026, "count": 1}, timeout=5).raise_for_status()

    waited = herald_ops(
        shell,
        "send",
        PHONE,
        "--template",
        "order_update",
        "--channel",
        channel_id,
        "--wait",
        "sent",
        "--json",
    )
    assert waited.returncode == 7, "it failed instead of being sent"
    message_id = json.loads(waited.stdout)["id"]
    assert waited.stderr.startswith(f"error: {message_id} failed (131026): meta: message undeliverable")
    failed = wait_status(shell, message_id, "failed")
    assert failed["dead_letter"] is True and failed["error_code"] == "131026"

    assert [m["id"] for m in ok_json(shell, "dead-letters", "list", "--channel", channel_id)["items"]] == [
        message_id
    ]
    listed = herald_ops(shell, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if message_id in line)
    assert "131026" in row and "[template order_update en_US]" in row

    replayed = herald_ops(shell, "dead-letters", "replay", message_id)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == ["replayed 1 dead letter(s)", f"  {message_id}"]
    assert wait_status(shell, message_id, "sent")["dead_letter"] is False
    assert (
        herald_ops(shell, "dead-letters", "list", "--channel", channel_id).stdout.strip() == "no dead letters"
    )

    again = herald_ops(shell, "dead-letters", "replay", message_id)
    assert again.returncode == 3, "no longer a dead letter: not found"
    assert f"no dead letter {message_id}" in again.stderr
    assert herald_ops(shell, "dead-letters", "replay").returncode == 2, "neither ids nor a filter"

    httpx.post(f"{fake_meta}/_fake/errors", json={"code": 131026, "count": 1}, timeout=5).raise_for_status()
    second = ok_json(shell, "send", PHONE, "--template", "order_update", "--channel", channel_id)["id"]
    wait_status(shell, second, "failed")
    assert ok_json(shell, "dead-letters", "replay", "--all") == {"replayed": [second]}
    wait_status(shell, second, "sent")


# --- schedules --------------------------------------------------------------------------------


def test_schedules_create_list_cancel(shell: dict[str, str]) -> None:
    created = ok_json(shell, "schedules", "create", PHONE, "Your table is ready", "--in", "2h")
    assert created["status"] == "pending" and created["kind"] == "one_off"

    listed = herald_ops(shell, "schedules", "list", "--status", "pending")
    assert listed.returncode == 0, listed.stderr
    assert any(created["id"] in line and "pending" in line for line in listed.stdout.splitlines())

    cancelled = herald_ops(shell, "schedules", "cancel", created["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"cancelled {created['id']}")
    assert [
        s["status"] for s in ok_json(shell, "schedules", "list")["items"] if s["id"] == created["id"]
    ] == ["cancelled"]

    twice = herald_ops(shell, "schedules", "cancel", created["id"])
    assert twice.returncode == 1, "the API refuses (409): already cancelled"
    assert twice.stderr.startswith("error: ") and twice.stdout == ""

    recurring = ok_json(
        shell,
        "schedules",
        "create",
        PHONE,
        "Standup",
        "--preset",
        "weekdays",
        "--start",
        "2030-01-07T09:00:00",
        "--timezone",
        "America/Sao_Paulo",
    )
    assert recurring["kind"] == "recurring" and "BYDAY=MO,TU,WE,TH,FR" in recurring["rule"]
    assert herald_ops(shell, "schedules", "cancel", recurring["id"]).returncode == 0


# --- exit codes -------------------------------------------------------------------------------


def test_exit_codes_say_what_happened(shell: dict[str, str]) -> None:
    missing = herald_ops(shell, "messages", "show", str(uuid.uuid4()))
    assert missing.returncode == 3 and "no message" in missing.stderr

    refused = herald_ops(shell, "send", "not-a-phone", "hello")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: request is invalid: to:"), refused.stderr

    bad_key = herald_ops(shell, "messages", "list", HERALD_API_KEY="hk_nobody")
    assert bad_key.returncode == 1 and "invalid or revoked API key" in bad_key.stderr

    down = herald_ops(shell, "messages", "list", HERALD_SENDER_URL=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 4 and "sender is unreachable" in down.stderr

    unknown_channel = herald_ops(shell, "channels", "pause", str(uuid.uuid4()))
    assert unknown_channel.returncode == 3

    usage = herald_ops(shell, "schedules", "create", PHONE, "when?")
    assert usage.returncode == 2 and "--at" in usage.stderr
    assert herald_ops(shell, "messages", "list", "--status", "lost").returncode == 2


def test_templates_list_works_and_a_missing_catalogue_has_its_own_exit_code(shell: dict[str, str]) -> None:
    listed = herald_ops(shell, "templates", "list")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(ok_json(shell, "templates", "list"), dict)

    # a Herald whose sender has no catalogue routes answers those paths with its router's 404
    with _sender_without_catalogue() as url:
        for command in (["templates", "sync"], ["templates", "list"]):
            done = herald_ops(shell, *command, HERALD_SENDER_URL=url)
            assert done.returncode == 6, (command, done.returncode, done.stderr)
            assert "this Herald has no template catalogue" in done.stderr


class _NoCatalogue(BaseHTTPRequestHandler):
    def _not_found(self) -> None:
        body = json.dumps({"error": "not_found", "message": "Not Found", "details": []}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _not_found

    def log_message(self, *_: Any) -> None:
        pass


class _sender_without_catalogue:
    def __enter__(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _NoCatalogue)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


CAMPAIGN_TEMPLATE = {
    "name": "cli_doors_open",
    "language": "en_US",
    "category": "UTILITY",
    "body": "Hi {{name}}, doors open at {{time}}.",
    "variables": ["name", "time"],
    "examples": {"name": "Ana", "time": "19:00"},
}


def test_campaign_send_of_a_csv_interrupted_then_resumed_sends_every_row_once(
    herald: Herald, shell: dict[str, str], tmp_path: Path
) -> None:
    key = herald.create_tenant(f"cli-campaign-{uuid.uuid4().hex[:6]}")
    env = {**shell, "HERALD_API_KEY": key}
    channel = sandbox_channel(herald, key)
    with herald.client("sender", key) as sender:
        created = sender.post("/v1/templates", json={**CAMPAIGN_TEMPLATE, "channel_id": channel["id"]})
        assert created.status_code == 201, created.text
    n = 3000
    rows = [f"+55119{55:02d}{i:06d},Person {i},19:00" for i in range(n)]
    rows.insert(10, "12345,Bad Number,19:00")  # refused: not E.164
    rows.insert(20, f"+55119{55:02d}{0:06d},Again,19:00")  # refused (row 22): a duplicate of row 2
    path = tmp_path / "attendees.csv"
    path.write_text("to,name,time\n" + "\n".join(rows) + "\n")
    command = [
        sys.executable, "-m", "herald.cli", "campaign", "send", "--csv", str(path),
        "--template", "cli_doors_open", "--language", "en_US", "--channel", channel["id"], "--page-size", "100",
    ]  # fmt: skip

    # a bad file is refused before anything is sent, naming the row and column
    bad = tmp_path / "bad.csv"
    bad.write_text("to,name,time\n+5511955000001,Ana,19:00\n+5511955000002,,19:00\n")
    done = herald_ops(env, *command[3:5], "--csv", str(bad), *command[7:])
    assert done.returncode == 1, done.stderr
    assert "row 3, column 'name': empty" in done.stderr and "nothing was sent" in done.stderr

    def accepted() -> int:
        items = ok_json(env, "campaign", "list")["items"]
        return items[0]["accepted"] if items else 0

    first = subprocess.Popen(
        command, cwd=env["HERALD_CWD"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: accepted() >= 300, 60, "the first pages to be accepted", interval=0.05)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert "run the same command again to resume" in err
    at_interrupt = accepted()
    assert 300 <= at_interrupt < n, at_interrupt

    again = subprocess.run(
        command, cwd=env["HERALD_CWD"], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "resuming the earlier run of this file" in again.stdout
    assert f"{n:,} queued, 2 refused" in again.stdout
    assert "queued by an earlier run" in again.stdout
    refused = [line for line in again.stdout.splitlines() if "not_e164" in line or "duplicate" in line]
    assert len(refused) == 2 and refused[0].split()[0] == "12" and refused[1].split()[0] == "22", refused

    cid = ok_json(env, "campaign", "list")["items"][0]["id"]
    campaign = wait_for(
        lambda: (c := ok_json(env, "campaign", "show", cid))["state"] == "completed" and c,
        120,
        "the campaign to complete",
    )
    assert (campaign["accepted"], campaign["refused"], campaign["counts"]["sent"]) == (n, 2, n)
    with herald.client("sender", key) as sender:
        got = sender.get("/v1/sandbox/messages", params={"limit": 1000}).json()["items"]
        assert len(got) == 1000  # the newest thousand: each recipient at most once among them
        assert len({r["to"] for r in got}) == 1000
    shown = herald_ops(env, "campaign", "show", cid)
    assert shown.returncode == 0 and f"sent {n:,}" in shown.stdout, shown.stdout
    assert herald_ops(env, "campaign", "pause", cid).returncode == 0
    assert herald_ops(env, "campaign", "cancel", cid).returncode == 0
    assert herald_ops(env, "campaign", "resume", cid).returncode == 1  # a cancelled campaign stays so
    assert herald_ops(env, "campaign", "show", str(uuid.uuid4())).returncode == 3
