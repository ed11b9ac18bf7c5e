"""A local WAHA (2024.9 API) for tests: the send endpoints of
``../shared/contracts/waha/waha-openapi-v2024.9.json`` with their auth, validation and errors.

- auth: header ``X-Api-Key``; missing or wrong → 401 ``{"message": "Unauthorized", "statusCode": 401}``
- ``POST /api/sendText`` (``chatId``, ``text``, ``session``), ``/api/sendImage`` and
  ``/api/sendFile`` (``file`` = RemoteFile ``{mimetype, url, filename?}``, ``caption?``),
  ``/api/sendVideo`` (file needs ``filename`` too), ``/api/sendVoice`` (file ``{mimetype, url}``)
  → 201 with a ``WAMessage`` whose ``id`` is ``true_<chatId>_<id>``
- validation failures → 400 (NestJS: ``{"statusCode": 400, "message": [...], "error": "Bad Request"}``)
- an unknown session → 404; a session not WORKING (``set_session_status``) → 422 with its status
- sessions: ``GET /api/sessions/{session}`` → ``SessionInfo`` ``{name, status, me, engine,
  config}``; ``GET /api/{session}/auth/qr?format=image`` → the QR code (``image/png``, or
  ``Base64File`` ``{mimetype, data}`` when JSON is asked for) while the session is
  ``SCAN_QR_CODE``, else 422. ``drop_session`` / ``restore_session`` change a session's status
  and send the ``session.status`` webhook (signed ``X-Webhook-Hmac`` when ``hmac_key`` is set)
- ``GET /api/contacts/check-exists?phone=&session=`` → ``WANumberExistResult``
  ``{"numberExists", "chatId"?}``; a send to a number in ``unregistered`` fails with 500 and the
  engine's evaluation error, as WhatsApp Web answers for a number that has no WhatsApp account
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import re
import time
import uuid
from typing import Any

from aiohttp import web

from devtools.fake_providers._gateway import (
    QR_PNG,
    RECEIVED,
    FakeGateway,
    json_response,
    run_standalone,
)

CHAT_ID = re.compile(r"^[0-9]{5,20}@(c\.us|g\.us|lid|newsletter)$")
_FILE_ENDPOINTS = {
    "/api/sendImage": False,
    "/api/sendFile": False,
    "/api/sendVideo": True,
    "/api/sendVoice": False,
}


def _bad_request(*messages: str) -> web.Response:
    return json_response({"statusCode": 400, "message": list(messages), "error": "Bad Request"}, status=400)


class FakeWaha(FakeGateway):
    def __init__(
        self, *, api_key: str = "waha-key", sessions: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        #: session name → status (WORKING, STARTING, SCAN_QR_CODE, STOPPED, FAILED)
        self.sessions: dict[str, str] = dict(sessions or {"default": "WORKING"})
        self.me = "5511888887777@c.us"
        self.sent: list[dict[str, Any]] = []
        #: phone numbers (digits) that have no WhatsApp account
        self.unregistered: set[str] = set()
        self.hmac_key: str | None = None

    def set_session_status(self, session: str, status: str) -> None:
        self.sessions[session] = status

    # --- sessions and their webhooks ----------------------------------------------------------

    def configure_hmac(self, url: str, hmac_key: str) -> None:
        """Send webhooks to ``url`` signed with ``hmac_key`` (``X-Webhook-Hmac``, SHA-512)."""
        self.configure_webhook(url)
        self.hmac_key = hmac_key

    def sign(self, raw: bytes) -> dict[str, str]:
        headers = {
            "X-Webhook-Request-Id": uuid.uuid4().hex,
            "X-Webhook-Timestamp": str(int(time.time() * 1000)),
            **self.webhook_headers,
        }
        if self.hmac_key:
            headers["X-Webhook-Hmac"] = hmac.new(self.hmac_key.encode(), raw, hashlib.sha512).hexdigest()
            headers["X-Webhook-Hmac-Algorithm"] = "sha512"
        return headers

    async def change_session(self, session: str, status: str, *, webhook: bool = True) -> int | None:
        """Set the session's status and (``webhook``) tell the webhook URL, as WAHA does."""
        self.sessions[session] = status
        if not webhook:
            return None
        now = int(time.time() * 1000)
        return await self.send_webhook(
            {
                "id": f"evt_{uuid.uuid4().hex[:26]}",
                "timestamp": now,
                "event": "session.status",
                "session": session,
                "me": {"id": self.me, "pushName": "Acme Sales"} if status == "WORKING" else None,
                "payload": {
                    "status": status,
                    "statuses": [{"status": status, "timestamp": now}],
                    "data": None,
                },
                "engine": "NOWEB",
                "environment": {"version": "2024.9.2", "engine": "NOWEB", "tier": "CORE"},
            }
        )

    async def drop_session(self, session: str, *, webhook: bool = True) -> int | None:
        """The phone logged out: the session waits for its QR code to be scanned."""
        return await self.change_session(session, "SCAN_QR_CODE", webhook=webhook)

    async def restore_session(self, session: str, *, webhook: bool = True) -> int | None:
        """The QR code was scanned: the session works again."""
        return await self.change_session(session, "WORKING", webhook=webhook)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/sessions/{session}", self._session_info)
        app.router.add_get("/api/{session}/auth/qr", self._qr)
        app.router.add_post("/api/sendText", self._send)
        for path in _FILE_ENDPOINTS:
            app.router.add_post(path, self._send)
        app.router.add_get("/api/contacts/check-exists", self._check_exists)

    def _no_session(self, session: str) -> web.Response:
        return json_response(
            {
                "statusCode": 404,
                "message": f"We didn't find a session with name '{session}'. Please start it first "
                f"by using POST /api/sessions/{session}/start request",
                "error": "Not Found",
            },
            status=404,
        )

    async def _session_info(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return json_response({"message": "Unauthorized", "statusCode": 401}, status=401)
        session = request.match_info["session"]
        if session not in self.sessions:
            return self._no_session(session)
        status = self.sessions[session]
        return json_response(
            {
                "name": session,
                "status": status,
                "me": {"id": self.me, "pushName": "Acme Sales"} if status == "WORKING" else None,
                "engine": {"engine": "NOWEB"},
                "config": {"webhooks": [{"url": self.webhook_url}] if self.webhook_url else []},
            }
        )

    async def _qr(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return json_response({"message": "Unauthorized", "statusCode": 401}, status=401)
        session = request.match_info["session"]
        if session not in self.sessions:
            return self._no_session(session)
        status = self.sessions[session]
        if status != "SCAN_QR_CODE":
            return json_response(
                {
                    "statusCode": 422,
                    "error": "Session status is not as expected. Try again later or restart the session",
                    "session": session,
                    "status": status,
                    "expected": ["SCAN_QR_CODE"],
                },
                status=422,
            )
        if request.query.get("format", "image") == "raw":
            return json_response({"value": f"2@{uuid.uuid4().hex},{session}"})
        if "application/json" in request.headers.get("Accept", ""):
            return json_response({"mimetype": "image/png", "data": base64.b64encode(QR_PNG).decode()})
        return web.Response(body=QR_PNG, content_type="image/png")

    async def _check_exists(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return json_response({"message": "Unauthorized", "statusCode": 401}, status=401)
        phone = request.query.get("phone", "").lstrip("+")
        if not phone or "session" not in request.query:
            return _bad_request("phone must be a string", "session must be a string")
        if phone in self.unregistered:
            return json_response({"numberExists": False})
        return json_response({"numberExists": True, "chatId": f"{phone}@c.us"})

    async def _send(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != self.api_key:
            return json_response({"message": "Unauthorized", "statusCode": 401}, status=401)
        body = request[RECEIVED].json
        if not isinstance(body, dict):
            return _bad_request("body must be a JSON object")
        problems = []
        chat_id = body.get("chatId")
        if not isinstance(chat_id, str) or not chat_id:
            problems.append("chatId must be a string")
        session = body.get("session")
        if not isinstance(session, str) or not session:
            problems.append("session must be a string")
        if request.path == "/api/sendText":
            if not isinstance(body.get("text"), str):
                problems.append("text must be a string")
        else:
            file = body.get("file")
            if not isinstance(file, dict):
                problems.append("file must be an object")
            else:
                if not isinstance(file.get("mimetype"), str) or not file.get("mimetype"):
                    problems.append("file.mimetype must be a string")
                if not isinstance(file.get("url"), str) and not isinstance(file.get("data"), str):
                    problems.append("file.url or file.data must be a string")
                if _FILE_ENDPOINTS[request.path] and not file.get("filename"):
                    problems.append("file.filename must be a string")
            if "caption" in body and not isinstance(body["caption"], str):
                problems.append("caption must be a string")
        if problems:
            return _bad_request(*problems)
        if session not in self.sessions:
            return self._no_session(session)
        status = self.sessions[session]
        if status != "WORKING":
            return json_response(
                {
                    "statusCode": 422,
                    "error": "Session status is not as expected. Try again later or restart the session",
                    "session": session,
                    "status": status,
                    "expected": ["WORKING"],
                },
                status=422,
            )
        if not CHAT_ID.match(chat_id):  # type: ignore[arg-type]
            # what the engines answer for a chatId that is no WhatsApp id
            return json_response(
                {
                    "statusCode": 400,
                    "message": f"Invalid chatId '{chat_id}': use <phone>@c.us",
                    "error": "Bad Request",
                },
                status=400,
            )
        if chat_id.split("@")[0] in self.unregistered:  # type: ignore[union-attr]
            return json_response(
                {
                    "statusCode": 500,
                    "message": "Evaluation failed: Error: wid error: invalid wid",
                    "exception": {"message": "Evaluation failed: Error: wid error: invalid wid"},
                },
                status=500,
            )
        message = {
            "id": f"true_{chat_id}_3EB0{uuid.uuid4().hex[:16].upper()}",
            "timestamp": int(time.time()),
            "from": self.me,
            "fromMe": True,
            "source": "api",
            "to": chat_id,
            "body": body.get("text") or body.get("caption") or "",
            "hasMedia": request.path != "/api/sendText",
            "ack": 1,
            "ackName": "SERVER",
            "vCards": [],
            "_data": {},
        }
        self.sent.append(message)
        return json_response(message, status=201)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local WAHA for development")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--api-key", default="waha-key")
    args = parser.parse_args()
    run_standalone(FakeWaha(api_key=args.api_key, port=args.port))


if __name__ == "__main__":
    main()
