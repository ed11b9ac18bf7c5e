"""HTTP conventions shared by every service's API.

Errors have one shape, ``{"error": code, "message": human sentence, "details": [...]}``, and the
message says what to fix. Malformed JSON is a 400; a body that parses but does not validate is a
422 naming each field; the database being away is a 503 with ``Retry-After``, never a 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import is_transient_db_error
from shared.logging import get_logger

log = get_logger(__name__)
RETRY_AFTER_SECONDS = 2


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ErrorBody(BaseModel):
    error: str
    message: str
    details: list[dict[str, Any]] = []


class ApiError(Exception):
    def __init__(
        self, status_code: int, error: str, message: str, details: list[dict[str, Any]] | None = None
    ):
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.details = details or []
        # a 503 says the caller may retry: it says when, as HTTP clients and Chatwoot/Meta retries expect
        self.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status_code == 503 else None


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _problem(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown field: remove it (check the spelling against the API docs at /docs)"
    if err.get("type") == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        for err in errors:
            if err.get("type") == "json_invalid":
                ctx = err.get("ctx") or {}
                return _json(
                    400,
                    "malformed_json",
                    f"request body is not valid JSON: {ctx.get('error', 'parse error')}",
                    [{"position": err.get("loc", [None, None])[-1]}],
                )
        details = [{"field": _field(tuple(e.get("loc", ()))), "problem": _problem(e)} for e in errors]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        return _json(422, "invalid_request", f"request is invalid: {summary}", details)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status_code, exc.error, exc.message, exc.details, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        return _json(exc.status_code, code, str(exc.detail), [], headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_transient_db_error(exc):
            log.warning("database unavailable during request", path=request.url.path, error=repr(exc)[:200])
            return _json(
                503,
                "database_unavailable",
                "the database is not reachable right now; nothing was stored, retry shortly",
                [],
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        log.exception("unhandled error", path=request.url.path)
        return _json(500, "internal_error", "unexpected error; it has been logged", [])


def _json(
    status: int,
    error: str,
    message: str,
    details: list[dict[str, Any]],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": error, "message": message, "details": details},
        headers=headers,
    )


#: OpenAPI description of the error answers, for routes' ``responses=``
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON"},
    401: {"model": ErrorBody, "description": "Missing or invalid API key"},
    422: {"model": ErrorBody, "description": "Invalid request: the message names each field"},
    503: {"model": ErrorBody, "description": "Database unavailable; retry"},
}
