"""How the Chatwoot, Evolution API and WAHA answers are classified: pure functions, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import httpx
import pytest

from services.sender.providers import gateway
from services.sender.providers.base import Failure
from services.sender.providers.chatwoot import classify_chatwoot_error
from services.sender.providers.evolution import classify_evolution_error
from services.sender.providers.waha import classify_waha_error, waha_message_id
from shared.events import MediaContent


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("Sun, 22 Nov 2026 05:00:30 GMT", 30.0),
        ("Sun, 22 Nov 2026 04:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    now = datetime(2026, 11, 22, 5, 0, 0, tzinfo=UTC)
    assert gateway.parse_retry_after(value, now=now) == seconds


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (408, Failure.RETRY),
        (429, Failure.RETRY),
        (500, Failure.RETRY),
        (502, Failure.RETRY),
        (503, Failure.RETRY),
        (504, Failure.RETRY),
        (507, Failure.RETRY),
        (401, Failure.PAUSE_CHANNEL),
        (403, Failure.PAUSE_CHANNEL),
        (400, Failure.PERMANENT),
        (404, Failure.PERMANENT),
        (409, Failure.PERMANENT),
        (413, Failure.PERMANENT),
        (422, Failure.PERMANENT),
    ],
)
def test_the_shared_classification_by_status(status: int, failure: Failure) -> None:
    error = gateway.generic_http_error("X", status, "detail", {"retry-after": "4"})
    assert error.failure is failure
    assert (error.code, error.http_status) == (str(status), status)
    assert error.retry_after == (4.0 if failure is Failure.RETRY else None)


def test_transport_failures_are_retried_with_their_own_codes() -> None:
    request = httpx.Request("POST", "http://gw/send")
    timeout = gateway.transport_error("WAHA", httpx.ReadTimeout("slow", request=request))
    refused = gateway.transport_error("WAHA", httpx.ConnectError("refused", request=request))
    dropped = gateway.transport_error("WAHA", httpx.RemoteProtocolError("closed", request=request))
    assert (timeout.failure, timeout.code) == (Failure.RETRY, "timeout")
    assert (refused.failure, refused.code) == (Failure.RETRY, "connection")
    assert (dropped.failure, dropped.code) == (Failure.RETRY, "connection")


def test_aiohttp_transport_errors_are_told_apart_by_their_cause() -> None:
    """httpx-aiohttp maps every aiohttp connection error to ConnectTimeout; a dropped connection
    is still a connection error, and a read timeout still a timeout."""
    dropped = httpx.ConnectTimeout("Server disconnected")
    dropped.__cause__ = aiohttp.ServerDisconnectedError()
    slow = httpx.ReadTimeout("Timeout on reading data from socket")
    slow.__cause__ = aiohttp.SocketTimeoutError()
    assert gateway.transport_error("WAHA", dropped).code == "connection"
    assert gateway.transport_error("WAHA", slow).code == "timeout"


def test_only_a_request_that_may_have_reached_the_provider_is_ambiguous() -> None:
    """A resend after a lost answer can arrive twice; one after a refused connection cannot."""
    request = httpx.Request("POST", "http://gw/send")

    def via_aiohttp(exc: httpx.TransportError, cause: BaseException) -> httpx.TransportError:
        exc.__cause__ = cause
        return exc

    certain = [
        httpx.ConnectError("refused", request=request),
        httpx.ConnectTimeout("no connection in time", request=request),
        httpx.PoolTimeout("no free connection", request=request),
        via_aiohttp(
            httpx.ConnectTimeout("refused"), aiohttp.ClientConnectorError(None, OSError(111, "refused"))
        ),
        via_aiohttp(httpx.ConnectTimeout("connect timeout"), aiohttp.ConnectionTimeoutError()),
    ]
    ambiguous = [
        httpx.ReadTimeout("slow", request=request),
        httpx.WriteTimeout("slow", request=request),
        httpx.RemoteProtocolError("closed", request=request),
        via_aiohttp(httpx.ConnectTimeout("Server disconnected"), aiohttp.ServerDisconnectedError()),
        via_aiohttp(httpx.ReadTimeout("Timeout on reading"), aiohttp.SocketTimeoutError()),
    ]
    assert [gateway.transport_error("Meta", e).ambiguous for e in certain] == [False] * len(certain)
    assert [gateway.transport_error("Meta", e).ambiguous for e in ambiguous] == [True] * len(ambiguous)
    slow_download = httpx.ReadTimeout("slow", request=request)
    assert gateway.transport_error("the media link", slow_download, sending=False).ambiguous is False


# --- Evolution ----------------------------------------------------------------------------


def test_evolution_number_not_on_whatsapp_is_permanent() -> None:
    body = {
        "status": 400,
        "error": "Bad Request",
        "response": {"message": [{"exists": False, "jid": "5511@s.whatsapp.net", "number": "5511"}]},
    }
    error = classify_evolution_error(400, body)
    assert (error.failure, error.code) == (Failure.PERMANENT, "number_not_on_whatsapp")
    assert "5511 is not a WhatsApp number" in error.reason


def test_evolution_other_bad_requests_are_permanent_with_their_message() -> None:
    body = {
        "status": 400,
        "error": "Bad Request",
        "response": {"message": ['instance requires property "text"']},
    }
    error = classify_evolution_error(400, body)
    assert (error.failure, error.code) == (Failure.PERMANENT, "400")
    assert 'requires property "text"' in error.reason


def test_evolution_missing_instance_is_permanent() -> None:
    body = {"status": 404, "error": "Not Found", "response": {"message": ['The "x" instance does not exist']}}
    error = classify_evolution_error(404, body, instance="x")
    assert (error.failure, error.code) == (Failure.PERMANENT, "instance_not_found")
    assert "'instance' setting" in error.reason


@pytest.mark.parametrize(
    ("status", "failure"), [(401, Failure.PAUSE_CHANNEL), (500, Failure.RETRY), (429, Failure.RETRY)]
)
def test_evolution_auth_and_server_errors(status: int, failure: Failure) -> None:
    body = {"status": status, "error": "x", "response": {"message": "Unauthorized"}}
    assert classify_evolution_error(status, body).failure is failure


def test_evolution_tolerates_a_body_that_is_not_json() -> None:
    assert classify_evolution_error(502, "<html>bad gateway</html>").failure is Failure.RETRY
    assert classify_evolution_error(400, None).failure is Failure.PERMANENT


# --- WAHA ----------------------------------------------------------------------------------


def _session_body(state: str) -> dict:
    return {
        "statusCode": 422,
        "error": "Session status is not as expected. Try again later or restart the session",
        "session": "default",
        "status": state,
        "expected": ["WORKING"],
    }


@pytest.mark.parametrize(
    ("state", "failure"),
    [
        ("STARTING", Failure.RETRY),
        ("SCAN_QR_CODE", Failure.PAUSE_CHANNEL),
        ("STOPPED", Failure.PAUSE_CHANNEL),
        ("FAILED", Failure.PAUSE_CHANNEL),
    ],
)
def test_waha_session_states(state: str, failure: Failure) -> None:
    error = classify_waha_error(422, _session_body(state), session="default")
    assert (error.failure, error.code) == (failure, f"session_{state.lower()}")


def test_waha_missing_session_and_validation_are_permanent() -> None:
    missing = classify_waha_error(
        404, {"statusCode": 404, "message": "We didn't find a session", "error": "Not Found"}
    )
    invalid = classify_waha_error(
        400, {"statusCode": 400, "message": ["chatId must be a string"], "error": "Bad Request"}
    )
    plain_422 = classify_waha_error(422, {"statusCode": 422, "message": "file.url is not reachable"})
    assert (missing.failure, missing.code) == (Failure.PERMANENT, "session_not_found")
    assert (invalid.failure, invalid.reason) == (
        Failure.PERMANENT,
        "WAHA refused the message (400): chatId must be a string",
    )
    assert plain_422.failure is Failure.PERMANENT


def test_waha_not_implemented_auth_and_server_errors() -> None:
    assert classify_waha_error(501, {"message": "Available in WAHA Plus"}).code == "not_implemented"
    assert (
        classify_waha_error(401, {"message": "Unauthorized", "statusCode": 401}).failure
        is Failure.PAUSE_CHANNEL
    )
    assert (
        classify_waha_error(500, {"statusCode": 500, "message": "Internal server error"}).failure
        is Failure.RETRY
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"id": "true_1@c.us_ABC"}, "true_1@c.us_ABC"),  # the 2024.9 spec's WAMessage
        ({"id": {"fromMe": True, "id": "ABC", "_serialized": "true_1@c.us_ABC"}}, "true_1@c.us_ABC"),  # WEBJS
        ({"key": {"remoteJid": "1@s.whatsapp.net", "fromMe": True, "id": "ABC"}}, "true_1@c.us_ABC"),  # NOWEB
        ({}, None),
        ([], None),
    ],
)
def test_waha_message_id_from_each_engine(payload: object, expected: str | None) -> None:
    assert waha_message_id(payload, "1@c.us") == expected


# --- Chatwoot -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (401, {"error": "Invalid Access Token"}, Failure.PAUSE_CHANNEL),
        (403, {"error": "You are not authorized to do this action"}, Failure.PAUSE_CHANNEL),
        (404, {"error": "Resource could not be found"}, Failure.PERMANENT),
        (
            422,
            {"message": "Phone number should be in e164 format", "attributes": ["phone_number"]},
            Failure.PERMANENT,
        ),
        (400, {"errors": [{"message": "bad"}]}, Failure.PERMANENT),
        (429, None, Failure.RETRY),
        (500, None, Failure.RETRY),
        (503, "<html>", Failure.RETRY),
    ],
)
def test_chatwoot_answers(status: int, body: object, failure: Failure) -> None:
    error = classify_chatwoot_error(status, body, step="create the contact")
    assert error.failure is failure
    assert error.http_status == status


def test_chatwoot_reasons_say_what_was_being_done_and_what_to_fix() -> None:
    missing = classify_chatwoot_error(
        404, {"error": "Resource could not be found"}, step="create the contact"
    )
    assert missing.reason == (
        "Chatwoot could not create the contact (404: Resource could not be found): "
        "check the channel's account_id and inbox_id"
    )
    invalid = classify_chatwoot_error(
        422, {"message": "Phone number should be in e164 format"}, step="create the contact"
    )
    assert "Phone number should be in e164 format" in invalid.reason


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "given", "expected"),
    [
        ("https://cdn.example.com/a.pdf", None, "application/pdf"),
        ("https://cdn.example.com/a.png?sig=1", None, "image/png"),
        ("https://cdn.example.com/download", None, "image/jpeg"),
        ("https://cdn.example.com/a.pdf", "application/x-custom", "application/x-custom"),
    ],
)
def test_media_mime_type(link: str, given: str | None, expected: str) -> None:
    assert gateway.media_mime_type(MediaContent(kind="image", link=link, mime_type=given)) == expected


def test_media_filename_falls_back_to_the_link_then_the_kind() -> None:
    assert gateway.media_filename(MediaContent(kind="document", link="https://x.io/f/r.pdf")) == "r.pdf"
    assert gateway.media_filename(MediaContent(kind="document", link="https://x.io/")) == "document"
    assert gateway.media_filename(
        MediaContent(kind="document", link="https://x.io/r.pdf", filename="Receipt.pdf")
    ) == ("Receipt.pdf")
