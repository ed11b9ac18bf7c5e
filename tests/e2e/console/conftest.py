"""The console as a real process in front of the four services (tests/e2e/conftest.py's
``herald``), driven by Debian's chromium through Playwright (headless; no browser download).

Screenshots of every page land in ``.herald/artifacts/console/`` (printed by the tests)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.infra import ensure_chromium
from devtools.processes import REPO, ServiceProcess, free_port
from tests.e2e.conftest import Herald
from tests.e2e.sender.conftest import TOKEN, MetaThread

ARTIFACTS = REPO / ".herald" / "artifacts" / "console"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: a condition a user would notice, waited for with a generous deadline (never a fixed sleep)
WAIT_MS = 45_000


@dataclass
class Stack:
    herald: Herald
    console: ServiceProcess
    meta: MetaThread

    @property
    def url(self) -> str:
        return self.console.url

    def sender(self, key: str) -> httpx.Client:
        return self.herald.client("sender", key)

    def meta_channel(self, key: str) -> dict[str, Any]:
        body = {
            "name": "meta console",
            "provider": "meta",
            "base_url": self.meta.url,
            "settings": {"phone_number_id": secrets.token_hex(7)},
            "credentials": {"access_token": TOKEN},
            "throughput_per_second": 1000,
            "pair_interval_seconds": 0,
        }
        r = self.sender(key).post("/v1/channels", json=body)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture(scope="module")
def stack(herald: Herald) -> Iterator[Stack]:
    meta = MetaThread().start()
    env = {
        **herald.env,
        "CONSOLE_SECRET_KEY": secrets.token_hex(32),
        **{f"CONSOLE_{name.upper()}_URL": svc.url for name, svc in herald.services.items()},
    }
    console = ServiceProcess("console", free_port(), env, herald.tmp / "console.log")
    console.start()
    try:
        console.wait_ready()
        yield Stack(herald=herald, console=console, meta=meta)
    finally:
        console.terminate()
        meta.stop()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    """After ``stack``: Playwright's sync API keeps an event loop running in this thread, so the
    fixtures that call ``asyncio.run`` must be set up before it (and torn down after it)."""
    from playwright.sync_api import sync_playwright

    chromium = ensure_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    return ARTIFACTS


def sign_in(browser: Any, stack: Stack, key: str) -> Any:
    """A fresh browser context (its own cookies) signed in with ``key``; returns its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{stack.url}/sign-in")
    page.fill("input[name=api_key]", key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_url(f"{stack.url}/")
    return page
