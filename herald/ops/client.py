"""Where the operator commands find Herald, and how they talk to it.

Configuration, most specific first: ``--api-key``; the environment (``HERALD_API_KEY``, or the
``HERALD_KEY`` of the README's curl examples; ``HERALD_<SERVICE>_URL``),
then the ``.herald/env`` that ``make up`` writes (its ``HERALD_KEY`` and service URLs), searched
from the working folder upwards, then ``.herald/demo-tenant.json`` for the key and each service's
default port on localhost for the URLs.

Every failure becomes an :class:`OpsError` carrying the exit code that says what happened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herald.services import SERVICES

# exit codes (documented in `herald --help`)
OK = 0
REFUSED = 1  # the API answered 4xx: the request needs fixing (its message is printed)
USAGE = 2  # wrong arguments, or no API key configured
NOT_FOUND = 3  # the named message, channel, schedule … does not exist for this tenant
UNREACHABLE = 4  # the service did not answer (not running, wrong URL)
SERVER_ERROR = 5  # the service answered 5xx (e.g. its database is away): retry later
NOT_AVAILABLE = 6  # this Herald does not have that feature (e.g. no template catalogue)
FAILED = 7  # `send --wait` / `messages tail --until`: a followed message failed
TIMED_OUT = 8  # `send --wait` / `messages tail --until`: not reached within --timeout
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = f"""exit codes:
  {OK}    ok
  {REFUSED}    the API refused the request (4xx); its message says what to fix
  {USAGE}    usage: wrong arguments, or no API key found
  {NOT_FOUND}    not found (no such message, channel, schedule … for this tenant)
  {UNREACHABLE}    a service is unreachable (is Herald running? check HERALD_<SERVICE>_URL)
  {SERVER_ERROR}    a service failed (5xx, e.g. its database is away): retry shortly
  {NOT_AVAILABLE}    this Herald does not have that feature (e.g. no template catalogue)
  {FAILED}    send --wait, messages tail --until: a followed message failed
  {TIMED_OUT}    send --wait, messages tail --until: the status was not reached within --timeout
  {INTERRUPTED}  interrupted (Ctrl-C)"""


class OpsError(Exception):
    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


@dataclass(frozen=True)
class Config:
    api_key: str | None
    urls: dict[str, str]
    #: where the key came from, for the error when it is refused
    key_source: str


def find_state_dir(start: Path) -> Path | None:
    """The nearest ``.herald/`` folder at or above ``start``."""
    here = start.resolve()
    for d in (here, *here.parents):
        if (d / ".herald").is_dir():
            return d / ".herald"
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as ``make up`` writes them (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()
    return values


def resolve_config(environ: Mapping[str, str], cwd: Path, api_key: str | None = None) -> Config:
    """The key and service URLs to use (see the module docstring for the order)."""
    state = find_state_dir(cwd)
    file_env: dict[str, str] = {}
    if state is not None and (state / "env").is_file():
        file_env = read_env_file(state / "env")
    source = "--api-key"
    if api_key is None and environ.get("HERALD_API_KEY"):
        api_key, source = environ["HERALD_API_KEY"], "HERALD_API_KEY"
    if api_key is None and environ.get("HERALD_KEY"):
        api_key, source = environ["HERALD_KEY"], "HERALD_KEY"
    if api_key is None and file_env.get("HERALD_KEY"):
        api_key, source = file_env["HERALD_KEY"], str(state / "env")  # type: ignore[operator]
    if api_key is None and state is not None and (state / "demo-tenant.json").is_file():
        try:
            api_key = json.loads((state / "demo-tenant.json").read_text())["api_key"]
            source = str(state / "demo-tenant.json")
        except (ValueError, KeyError, TypeError):
            pass
    urls = {}
    for name, svc in SERVICES.items():
        var = f"HERALD_{name.upper()}_URL"
        urls[name] = (environ.get(var) or file_env.get(var) or f"http://localhost:{svc.port}").rstrip("/")
    return Config(api_key=api_key, urls=urls, key_source=source if api_key else "")


def error_message(response: httpx.Response) -> str:
    """The API's own sentence (``message``, or FastAPI's ``detail``), else the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        for field in ("message", "detail"):
            if isinstance(body.get(field), str):
                return body[field]
        if body.get("detail") is not None:
            return json.dumps(body["detail"])
    return json.dumps(body)[:500]


def is_missing_route(response: httpx.Response) -> bool:
    """A 404/405 from the router itself (the route does not exist), not a "no such item" 404."""
    return response.status_code in (404, 405) and error_message(response) in (
        "Not Found",
        "Method Not Allowed",
    )


class Client:
    """httpx against the services, the tenant's key on every request."""

    def __init__(self, config: Config, timeout: float = 10.0) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def raw(self, method: str, service: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self.config.api_key:
            raise OpsError(
                "no API key: set HERALD_API_KEY (or run `make up`, which writes .herald/env); "
                "create one with `herald tenant create NAME`",
                USAGE,
            )
        url = self.config.urls[service] + path
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise OpsError(
                f"{service} is unreachable at {self.config.urls[service]} ({exc.__class__.__name__}): "
                f"is Herald running? set HERALD_{service.upper()}_URL if it is elsewhere",
                UNREACHABLE,
            ) from exc

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer (None for 204); raises :class:`OpsError` on any failure."""
        response = self.raw(method, service, path, **kwargs)
        check(response, service)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, service: str, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", service, path, params=clean)

    def post(self, service: str, path: str, body: Any = None) -> Any:
        return self.request("POST", service, path, json=body)

    def patch(self, service: str, path: str, body: Any) -> Any:
        return self.request("PATCH", service, path, json=body)

    def delete(self, service: str, path: str) -> Any:
        return self.request("DELETE", service, path)


def check(response: httpx.Response, service: str) -> None:
    code = response.status_code
    if code < 400:
        return
    message = error_message(response)
    if code == 401:
        raise OpsError(f"{message} (check HERALD_API_KEY)", REFUSED, code)
    if code == 404:
        raise OpsError(message, NOT_FOUND, code)
    if code < 500:
        raise OpsError(message, REFUSED, code)
    raise OpsError(f"{service} failed ({code}): {message}", SERVER_ERROR, code)


def client_from_env(api_key: str | None = None) -> Client:
    return Client(resolve_config(os.environ, Path.cwd(), api_key))
