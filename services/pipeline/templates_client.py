"""The sender's template catalogue as the pipeline sees it: a rule that names a catalogue template
is checked there when it is saved (the template exists in that language; its variables are the
ones the rule maps).

``TemplateCatalogue`` asks the sender (``GET {sender_url}/v1/templates?name=&language=``) with the
caller's own ``Authorization`` header, so the sender's tenant scoping decides. Built once in
``app.py``; the same pattern as ingest's ``ChannelDirectory``.
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.logging import get_logger

log = get_logger(__name__)


class SenderUnavailable(Exception):
    """The sender could not answer (unreachable, timed out, 5xx or an unexpected answer)."""


class TemplateCatalogue:
    def __init__(self, sender_url: str, timeout_seconds: float) -> None:
        self.sender_url = sender_url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    async def find(self, name: str, language: str, authorization: str) -> dict[str, Any] | None:
        """The tenant's template ``name`` in ``language`` (the contract's T), or None when the
        catalogue has none; raises ``SenderUnavailable``."""
        url = f"{self.sender_url}/v1/templates"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
                answer = await http.get(
                    url, params={"name": name, "language": language}, headers={"Authorization": authorization}
                )
        except httpx.HTTPError as exc:
            log.warning("sender unreachable for a template check", url=url, error=repr(exc)[:200])
            raise SenderUnavailable(f"{type(exc).__name__} calling {self.sender_url}") from exc
        if answer.status_code != 200:
            log.warning("sender refused a template check", url=url, status=answer.status_code)
            raise SenderUnavailable(f"the sender answered {answer.status_code} to GET /v1/templates")
        try:
            found = answer.json()["templates"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SenderUnavailable("the sender's /v1/templates answer has no 'templates'") from exc
        for t in found:
            if t.get("name") == name and t.get("language") == language:
                return dict(t)
        return None
