"""The console in front of a Herald that has none of the newer APIs: a stand-in answering the
sender's ``GET /v1/messages`` (so a key can sign in) and 404 to everything else, as a service
without a route does. Every page says "not available on this Herald" instead of failing; a form
with bad input is answered 422 with what to fix. No infrastructure needed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from devtools.processes import ServiceProcess, free_port
from herald.services import SERVICES
from services.console.web import NAV

KEY = "hk_older-herald-key"


class OlderHerald(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/v1/messages"):
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                return self._answer(401, {"error": "unauthorized", "message": "invalid API key"})
            return self._answer(200, {"items": []})
        self._answer(404, {"error": "not_found", "message": "Not Found", "details": []})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OlderHerald)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stub = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "CONSOLE_"))}
    env.update(
        HERALD_ENVIRONMENT="test",
        CONSOLE_SECRET_KEY=secrets.token_hex(32),
        **{f"CONSOLE_{name.upper()}_URL": stub for name in SERVICES},
    )
    tmp = Path(tmp_path_factory.mktemp("console-older"))
    proc = ServiceProcess("console", free_port(), env, tmp / "console.log")
    proc.start()
    try:
        proc.wait_ready()
        yield proc.url
    finally:
        proc.terminate()
        server.shutdown()


def signed_in(url: str) -> httpx.Client:
    http = httpx.Client(base_url=url, follow_redirects=False, timeout=10)
    form = http.get("/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text
    bad = http.post("/sign-in", data={"csrf": token.group(1), "api_key": "wrong"})
    assert bad.status_code == 401 and "not valid" in bad.text
    token = re.search(r'name="csrf" value="([^"]+)"', bad.text)
    assert token
    ok = http.post("/sign-in", data={"csrf": token.group(1), "api_key": KEY})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and KEY not in cookie
    return http


def test_every_page_says_not_available_instead_of_failing(console: str) -> None:
    with contextlib.closing(signed_in(console)) as http:
        for path, _ in NAV:
            page = http.get(path)
            assert page.status_code == 200, f"{path}: {page.status_code} {page.text[:300]}"
            if path not in ("/", "/messages"):
                assert "Not available on this Herald" in page.text, path
        overview = http.get("/").text
        assert "from latest messages" in overview and "Not available on this Herald" in overview


def test_bad_form_input_gets_a_4xx_that_says_what_to_fix(console: str) -> None:
    with contextlib.closing(signed_in(console)) as http:
        search = http.get("/messages", params={"from": "yesterday"})
        assert search.status_code == 422 and "use a date like 2026-12-03" in search.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', http.get("/schedules/new").text)
        assert csrf
        bad_zone = http.post(
            "/schedules/new",
            data={
                "csrf": csrf.group(1),
                "to": "+5511999998888",
                "text": "x",
                "send_at": "2030-01-01T09:00",
                "timezone": "Mars/Olympus",
            },
        )
        assert bad_zone.status_code == 422 and "IANA name" in bad_zone.text
        live = http.get("/live/messages", params={"ids": "not-a-message"})
        assert live.status_code == 200 and live.json() == {"messages": {}}
    with httpx.Client(base_url=console) as anonymous:
        assert anonymous.get("/live/messages").status_code == 401
