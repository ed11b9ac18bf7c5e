"""The operators' console in a real browser: sign in, send and watch a message turn sent,
replay a dead letter, create and cancel a schedule, see the charts; CSRF, cookie flags, tenant
isolation and sign-out; a screenshot of every page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.processes import wait_for
from services.console.web import NAV
from tests.e2e.console.conftest import WAIT_MS, Stack, sign_in

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.herald.create_tenant("console-a")


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack, key: str) -> Any:
    p = sign_in(browser, stack, key)
    yield p
    p.context.close()


def message_status(stack: Stack, key: str, message_id: str) -> dict[str, Any]:
    return stack.sender(key).get(f"/v1/messages/{message_id}").json()


def test_a_message_sent_from_the_console_turns_sent_on_screen_without_a_reload(
    page: Any, stack: Stack, key: str, artifacts: Path
) -> None:
    page.goto(f"{stack.url}/messages/new")
    page.fill("input[name=to]", "+5511999990001")
    page.fill("textarea[name=text]", "Your order is ready (console)")
    page.click("#send button[type=submit]")
    page.wait_for_url(re.compile(r"/messages/[0-9a-f-]{36}$"))
    message_id = page.url.rsplit("/", 1)[-1]
    page.evaluate("window.__no_reload = true")
    status = page.locator("[data-live=message] .js-status")
    status.filter(has_text=re.compile(r"sent|delivered|read")).wait_for(timeout=WAIT_MS)
    assert page.evaluate("window.__no_reload === true"), "the page reloaded instead of updating in place"
    assert page.locator(".js-history li").count() >= 2, "the timeline shows the status history"
    assert message_status(stack, key, message_id)["status"] in {"sent", "delivered", "read"}
    page.screenshot(path=str(artifacts / "message.png"), full_page=True)


def test_a_message_sent_through_the_api_turns_sent_on_the_list(page: Any, stack: Stack, key: str) -> None:
    page.goto(f"{stack.url}/messages")
    page.evaluate("window.__no_reload = true")
    sent = stack.sender(key).post("/v1/messages", json={"to": "+5511999990002", "text": "From the API"})
    assert sent.status_code == 202, sent.text
    # a message that did not exist when the page loaded appears after a search; the rows on
    # screen are polled: this one, searched by recipient, is followed until it is sent
    page.goto(f"{stack.url}/messages?to=%2B5511999990002")
    row = page.locator(f"tr[data-message-id='{sent.json()['id']}']")
    row.wait_for()
    row.locator(".js-status").filter(has_text=re.compile(r"sent|delivered|read")).wait_for(timeout=WAIT_MS)


def test_a_dead_letter_is_replayed_after_a_confirmation(
    page: Any, stack: Stack, key: str, artifacts: Path
) -> None:
    channel = stack.meta_channel(key)
    to = "+5511999990003"
    stack.meta.fail_next(131026, to=to.lstrip("+"))
    sent = stack.sender(key).post(
        "/v1/messages",
        json={
            "to": to,
            "content": {"kind": "template", "name": "order_update", "language": "en_US"},
            "channel_id": channel["id"],
        },
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]
    wait_for(lambda: message_status(stack, key, message_id)["dead_letter"], 45, "the dead letter")

    page.goto(f"{stack.url}/dead-letters")
    row = page.locator(f"tr[data-message-id='{message_id}']")
    assert "131026" in row.inner_text()
    page.screenshot(path=str(artifacts / "dead-letters.png"), full_page=True)
    row.get_by_role("link", name="Replay…").click()
    page.wait_for_url(re.compile(r"/dead-letters/replay\?"))
    assert "Send 1 dead letter again?" in page.inner_text("#replay-confirm")
    page.screenshot(path=str(artifacts / "replay-confirm.png"), full_page=True)
    page.click("#replay-confirm button[type=submit]")
    page.get_by_text("Replayed 1 message").wait_for()
    wait_for(
        lambda: message_status(stack, key, message_id)["status"] == "sent",
        45,
        "the replayed message to be sent",
    )
    assert page.locator(f"tr[data-message-id='{message_id}']").count() == 0


def test_a_schedule_is_created_shows_its_next_occurrences_and_is_cancelled(
    page: Any, stack: Stack, artifacts: Path
) -> None:
    page.goto(f"{stack.url}/schedules/new")
    when = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
    page.fill("input[name=to]", "+5511999990004")
    page.fill("textarea[name=text]", "Weekly pickup reminder")
    page.fill("input[name=send_at]", when.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=timezone]", "Europe/Lisbon")
    page.select_option("select[name=preset]", "weekly")
    page.click("#schedule-form button[type=submit]")
    page.wait_for_url(re.compile(r"/schedules/[0-9a-f-]{36}$"))
    assert page.inner_text(".js-schedule-status") == "pending"
    assert page.locator(".js-next li").count() == 5
    page.screenshot(path=str(artifacts / "schedule.png"), full_page=True)
    page.get_by_role("link", name="Edit").click()
    assert page.input_value("select[name=preset]") == "weekly"
    page.fill("textarea[name=text]", "Weekly pickup reminder (edited)")
    page.click("#schedule-form button[type=submit]")
    page.wait_for_url(re.compile(r"/schedules/[0-9a-f-]{36}$"))
    assert "Weekly pickup reminder (edited)" in page.inner_text("main")
    assert page.locator(".js-next li").count() == 5
    page.click("#cancel-schedule button")
    page.locator(".js-schedule-status", has_text="cancelled").wait_for()
    page.goto(f"{stack.url}/schedules?status=cancelled")
    assert "Weekly pickup reminder" in page.inner_text("table.list")


def test_the_overview_draws_charts_with_data(page: Any, stack: Stack, key: str, artifacts: Path) -> None:
    sent = stack.sender(key).post("/v1/messages", json={"to": "+5511999990007", "text": "For the chart"})
    assert sent.status_code == 202, sent.text
    wait_for(
        lambda: message_status(stack, key, sent.json()["id"])["status"] == "sent", 45, "the message sent"
    )
    page.goto(f"{stack.url}/")
    bars = page.locator("#chart-per-day svg.chart rect[data-value]")
    assert bars.count() > 0, page.inner_html("#chart-per-day")
    assert int(page.get_attribute("#chart-per-day svg.chart", "data-points") or 0) >= 1
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)


def test_every_page_renders_and_is_screenshotted(page: Any, stack: Stack, artifacts: Path) -> None:
    for path, label in NAV:
        response = page.goto(f"{stack.url}{path}")
        assert response is not None and response.status < 500, f"{path}: {response and response.status}"
        text = page.inner_text("main")
        assert label.split()[0].lower() in text.lower() or "not available on this herald" in text.lower(), (
            text
        )
        name = path.strip("/") or "overview"
        page.screenshot(path=str(artifacts / f"page-{name}.png"), full_page=True)
    print(f"\nscreenshots of every console page: {artifacts}")


def test_the_session_cookie_is_httponly_and_samesite_lax(page: Any) -> None:
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["herald_console"]
    assert session["httpOnly"] is True and session["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == "", "scripts must not read the session cookie"
    assert not any(v in session["value"] for v in ("hk_",)), "the API key is not readable in the cookie"


def test_a_form_without_its_csrf_token_is_refused(page: Any, stack: Stack, key: str) -> None:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=stack.url, cookies=cookies, follow_redirects=False) as http:
        before = len(stack.sender(key).get("/v1/messages", params={"to": "+5511999990005"}).json()["items"])
        refused = http.post("/messages/new", data={"to": "+5511999990005", "text": "forged"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        wrong = http.post("/messages/new", data={"to": "+5511999990005", "text": "forged", "csrf": "guess"})
        assert wrong.status_code == 403
        assert (
            len(stack.sender(key).get("/v1/messages", params={"to": "+5511999990005"}).json()["items"])
            == before
        )
        # the sign-in form is protected too (its token is bound to a cookie of its own)
        with httpx.Client(base_url=stack.url) as anonymous:
            assert anonymous.post("/sign-in", data={"api_key": key}).status_code == 403


def test_a_bad_key_is_refused_with_a_message(browser: Any, stack: Stack) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{stack.url}/sign-in")
    page.fill("input[name=api_key]", "not-a-key")
    page.click("#sign-in button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    assert "herald_console" not in {c["name"] for c in context.cookies()}
    context.close()


def test_one_tenant_never_sees_anothers_data(browser: Any, stack: Stack, key: str) -> None:
    mine = stack.sender(key).post("/v1/messages", json={"to": "+5511999990006", "text": "tenant A only"})
    assert mine.status_code == 202
    other = sign_in(browser, stack, stack.herald.create_tenant("console-b"))
    try:
        other.goto(f"{stack.url}/messages")
        assert "tenant A only" not in other.inner_text("main")
        response = other.goto(f"{stack.url}/messages/{mine.json()['id']}")
        assert response is not None and response.status == 404
        live = other.evaluate(
            "id => fetch('/live/messages?ids=' + id).then(r => r.json())", mine.json()["id"]
        )
        assert live == {"messages": {}}
        other.goto(f"{stack.url}/dead-letters")
        assert "131026" not in other.inner_text("main")
    finally:
        other.context.close()


def test_sign_out_ends_the_session(browser: Any, stack: Stack, key: str) -> None:
    page = sign_in(browser, stack, key)
    kept = [c for c in page.context.cookies() if c["name"] == "herald_console"]
    assert kept
    page.click("header .signout button")
    page.wait_for_url(f"{stack.url}/sign-in")
    assert "herald_console" not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{stack.url}/messages")
    assert page.url == f"{stack.url}/sign-in"
    # a copy of the cookie taken before signing out no longer signs anyone in
    page.context.add_cookies(kept)
    page.goto(f"{stack.url}/messages")
    assert page.url == f"{stack.url}/sign-in"
    page.context.close()


def test_a_channel_is_paused_and_resumed_from_its_page(
    page: Any, stack: Stack, key: str, artifacts: Path
) -> None:
    channel = stack.meta_channel(key)
    page.goto(f"{stack.url}/channels")
    page.get_by_role("link", name=channel["name"]).first.click()
    page.wait_for_url(re.compile(r"/channels/[0-9a-f-]{36}$"))
    page.get_by_role("button", name="Pause").click()
    page.locator(".breaker", has_text="paused").wait_for()
    assert "paused by an operator" in page.inner_text("main")
    assert stack.sender(key).get(f"/v1/channels/{page.url.rsplit('/', 1)[-1]}").json()["breaker"] == "paused"
    page.screenshot(path=str(artifacts / "channel-paused.png"), full_page=True)
    page.get_by_role("button", name="Resume").click()
    page.locator(".breaker", has_text="closed").wait_for()
