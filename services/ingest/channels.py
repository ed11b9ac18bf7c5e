"""The sender's channels as ingest sees them: a webhook source's ``channel_id`` must name a channel
of the caller's tenant, and only the sender knows its channels.

``ChannelDirectory`` asks the sender (``GET {sender_url}/v1/channels/{id}``) with the caller's own
``Authorization`` header, so the sender's tenant scoping decides: 200 is a channel of this tenant,
404 is not (another tenant's channel answers 404 there too). Built once in ``app.py``.
"""

from __future__ import annotations

import uuid

import httpx

from shared.logging import get_logger

log = get_logger(__name__)


class UnknownChannel(Exception):
    """The sender has no such channel for the caller's tenant."""


class SenderUnavailable(Exception):
    """The sender could not answer (unreachable, timed out, 5xx or an unexpected status)."""


class ChannelDirectory:
    def __init__(self, sender_url: str, timeout_seconds: float) -> None:
        self.sender_url = sender_url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    async def require(self, channel_id: uuid.UUID, authorization: str) -> None:
        """Return when ``channel_id`` is a channel of the tenant ``authorization`` belongs to;
        raise ``UnknownChannel`` or ``SenderUnavailable`` otherwise."""
        url = f"{self.sender_url}/v1/channels/{channel_id}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
                answer = await http.get(url, headers={"Authorization": authorization})
        except httpx.HTTPError as exc:
            log.warning("sender unreachable for a channel check", url=url, error=repr(exc)[:200])
            raise SenderUnavailable(f"{type(exc).__name__} calling {self.sender_url}") from exc
        if answer.status_code == 200:
            return
        if answer.status_code == 404:
            raise UnknownChannel(str(channel_id))
        log.warning("sender refused a channel check", url=url, status=answer.status_code)
        raise SenderUnavailable(f"the sender answered {answer.status_code}")
