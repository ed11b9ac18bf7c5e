"""What the three self-hosted gateways (Chatwoot, Evolution API, WAHA) have in common.

Pure helpers: turning an HTTP answer or a transport failure into a ``ProviderError``, reading
``Retry-After``, rendering quick replies and lists as numbered text for gateways that cannot send
interactive messages, and naming a media link's MIME type. No I/O apart from ``call``, which makes
one request and converts transport failures.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx

from services.sender.providers.base import Failure, ProviderError
from shared.events import ButtonsContent, ListContent, MediaContent

#: answers that mean "try again later" whatever the gateway
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: answers that mean the credentials are wrong: every message on the channel would fail alike
AUTH_STATUSES = frozenset({401, 403})


class SessionDown(ProviderError):
    """The gateway's WhatsApp Web session cannot send right now (not connected, waiting for its
    QR code, reconnecting). Nothing is wrong with the message: the sender puts it back in the
    queue and pauses the channel until the session is connected again (services.sender.sessions).
    ``state`` is Herald's session state: connecting, qr or disconnected."""

    def __init__(self, reason: str, *, state: str, **kwargs: Any) -> None:
        super().__init__(reason, **kwargs)
        self.state = state


def data_url(mime: str, data: bytes | str) -> str:
    """A ``data:`` URL of an image (``data`` raw bytes, or already base64 text)."""
    text = data if isinstance(data, str) else base64.b64encode(data).decode()
    return f"data:{mime};base64,{text}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _is_timeout(exc: httpx.TransportError) -> bool:
    """Whether no answer came in time. httpx-aiohttp maps every aiohttp connection error (a
    dropped connection too) to ``ConnectTimeout``: the aiohttp cause tells the two apart."""
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("aiohttp"):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def _before_sending(exc: httpx.TransportError) -> bool:
    """Whether the request certainly never reached the provider: no connection could be made
    (refused, DNS, TLS, a connect timeout) or none was free in the pool. Anything later (a read
    timeout, a connection dropped after the request was written) is ambiguous: the provider may
    have accepted the message and only its answer was lost."""
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("aiohttp"):
        return isinstance(cause, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def transport_error(provider: str, exc: httpx.TransportError, *, sending: bool = True) -> ProviderError:
    """A request that got no HTTP answer: retry. When a send may have reached the provider the
    error is ``ambiguous`` (a resend may arrive twice); the sender bounds and counts those.
    ``sending=False``: a request that sends nothing (a media download), never ambiguous."""
    ambiguous = sending and not _before_sending(exc)
    if _is_timeout(exc):
        return ProviderError(
            f"{provider} did not answer in time ({type(exc).__name__})",
            failure=Failure.RETRY,
            code="timeout",
            ambiguous=ambiguous,
        )
    return ProviderError(
        f"could not reach {provider} ({type(exc).__name__}: {exc})",
        failure=Failure.RETRY,
        code="connection",
        ambiguous=ambiguous,
    )


def generic_http_error(
    provider: str, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The classification every gateway shares; the adapters refine 400/404/422 first."""
    retry_after = parse_retry_after((headers or {}).get("retry-after"))
    if status == 429:
        return ProviderError(
            f"{provider} rate-limited the request (429): {detail}",
            failure=Failure.RETRY,
            code="429",
            retry_after=retry_after,
            http_status=status,
        )
    if status in RETRY_STATUSES or status >= 500:
        return ProviderError(
            f"{provider} failed with {status}: {detail}",
            failure=Failure.RETRY,
            code=str(status),
            retry_after=retry_after,
            http_status=status,
        )
    if status in AUTH_STATUSES:
        return ProviderError(
            f"{provider} refused the channel's credentials ({status}: {detail}): "
            "set a valid API key on the channel",
            failure=Failure.PAUSE_CHANNEL,
            code=str(status),
            http_status=status,
        )
    return ProviderError(
        f"{provider} refused the message ({status}): {detail}",
        failure=Failure.PERMANENT,
        code=str(status),
        http_status=status,
    )


def unsupported(provider: str, kind: str, what_to_do: str) -> ProviderError:
    return ProviderError(
        f"{provider} cannot send a {kind} message: {what_to_do}",
        failure=Failure.PERMANENT,
        code="unsupported_kind",
    )


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def call(
    provider: str, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request; transport failures become ``ProviderError`` (RETRY)."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise transport_error(provider, exc) from exc


def numbered_buttons(content: ButtonsContent) -> str:
    """Quick replies as text: the recipient answers with the number or the title."""
    lines = [content.header] if content.header else []
    lines.append(content.body)
    lines.append("")
    lines += [f"{i}. {button.title}" for i, button in enumerate(content.buttons, start=1)]
    if content.footer:
        lines += ["", content.footer]
    lines += ["", "Reply with the number of your choice."]
    return "\n".join(lines)


def numbered_list(content: ListContent) -> str:
    """A list as text, rows numbered across sections; section titles and descriptions kept."""
    lines = [content.header] if content.header else []
    lines.append(content.body)
    number = 0
    for section in content.sections:
        lines.append("")
        if section.title:
            lines.append(f"*{section.title}*")
        for row in section.rows:
            number += 1
            line = f"{number}. {row.title}"
            if row.description:
                line += f" – {row.description}"
            lines.append(line)
    if content.footer:
        lines += ["", content.footer]
    lines += ["", "Reply with the number of your choice."]
    return "\n".join(lines)


DEGRADED_BUTTONS = "quick replies sent as a numbered text list: the gateway cannot send interactive buttons"
DEGRADED_LIST = "list sent as a numbered text list: the gateway cannot send interactive lists"

_DEFAULT_MIME = {
    "image": "image/jpeg",
    "document": "application/octet-stream",
    "audio": "audio/ogg",
    "video": "video/mp4",
}


def media_mime_type(media: MediaContent) -> str:
    """The given MIME type, else the one the link's extension names, else the kind's usual one."""
    if media.mime_type:
        return media.mime_type
    guessed, _ = mimetypes.guess_type(httpx.URL(media.link).path)
    return guessed or _DEFAULT_MIME[media.kind]


def media_filename(media: MediaContent) -> str:
    """The given file name, else the last part of the link's path, else ``<kind>``."""
    if media.filename:
        return media.filename
    name = httpx.URL(media.link).path.rsplit("/", 1)[-1]
    return name or media.kind


def error_detail(body: Any, fallback: str) -> str:
    """A short readable text out of the usual error bodies (``message``/``error``/``errors``)."""
    if isinstance(body, dict):
        for key in ("message", "response", "error", "errors"):
            value = body.get(key)
            if value:
                if isinstance(value, dict):
                    return error_detail(value, fallback)
                if isinstance(value, list):
                    return "; ".join(v if isinstance(v, str) else str(v) for v in value)
                return str(value)
    if isinstance(body, str) and body:
        return body[:300]
    return fallback
