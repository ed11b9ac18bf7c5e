"""The console's only way to Herald's data: the services' HTTP APIs, called with the signed-in
tenant's API key (the key in the session cookie is the only credential the console ever uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.console.settings import ConsoleSettings


class NotAvailable(Exception):
    """The service answered 404 for a whole collection: this Herald does not have that API yet."""

    def __init__(self, service: str, path: str) -> None:
        super().__init__(f"{service} has no {path}")
        self.service = service
        self.path = path


class ServiceDown(Exception):
    """A service did not answer (connection refused, timeout)."""

    def __init__(self, service: str, error: str) -> None:
        super().__init__(f"{service} did not answer: {error}")
        self.service = service


@dataclass
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """What the service said went wrong (its error ``message``), for the operator."""
        if isinstance(self.body, dict):
            return str(self.body.get("message") or self.body.get("detail") or self.body)
        return str(self.body)


class Api:
    """One tenant's view of Herald: ``await api.get("sender", "/v1/messages", params=...)``."""

    def __init__(self, http: httpx.AsyncClient, settings: ConsoleSettings, api_key: str) -> None:
        self._http = http
        self._settings = settings
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Answer:
        url = self._settings.url_of(service) + path
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            r = await self._http.request(method, url, params=clean, json=json, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ServiceDown(service, type(exc).__name__) from exc
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = r.text
        return Answer(r.status_code, body)

    async def get(self, service: str, path: str, **params: Any) -> Answer:
        return await self.call("GET", service, path, params=params)

    async def collection(self, service: str, path: str, **params: Any) -> Any:
        """GET a list API; a 404 means this Herald has no such API (``NotAvailable``)."""
        answer = await self.get(service, path, **params)
        if answer.status == 404:
            raise NotAvailable(service, path)
        if not answer.ok:
            raise ApiRefused(answer)
        return answer.body

    async def post(self, service: str, path: str, body: Any = None) -> Answer:
        return await self.call("POST", service, path, json=body)

    async def patch(self, service: str, path: str, body: Any) -> Answer:
        return await self.call("PATCH", service, path, json=body)

    async def delete(self, service: str, path: str) -> Answer:
        return await self.call("DELETE", service, path)


class ApiRefused(Exception):
    """A service refused a read (401, 422 …): shown on the page with the service's own message."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.message)
        self.answer = answer


async def verify_key(http: httpx.AsyncClient, settings: ConsoleSettings, api_key: str) -> Answer:
    """Sign-in check: the sender answers 200 to this tenant's key, 401 to anything else."""
    return await Api(http, settings, api_key).get("sender", "/v1/messages", limit=1)
