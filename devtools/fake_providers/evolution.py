"""A local Evolution API (v2.3.6) for tests: the send endpoints with their auth, validation,
answers and errors (``../shared/contracts/README.md`` §4).

- auth: header ``apikey`` = the global key (``api_key``) or the instance's token; else 401
- ``POST /message/sendText/{instance}``: ``number`` and ``text`` required → 201 with the message
- ``POST /message/sendMedia/{instance}``: ``number``, ``mediatype`` (image|document|video|audio),
  ``media`` required; ``mimetype``, ``caption``, ``fileName`` optional → 201
- an unknown instance → 404; a number in ``not_on_whatsapp`` → 400 ``exists: false``; a closed
  instance (``close_instance``) → 500 ``Connection Closed``, as Baileys fails the send
- ``GET /instance/connectionState/{instance}`` → ``{"instance": {"instanceName", "state"}}``
  (open | close | connecting); ``GET /instance/connect/{instance}`` → the QR code
  ``{"pairingCode", "code", "base64", "count"}`` while the instance is not open, else its state
- ``drop_instance`` / ``restore_instance``: the WhatsApp session closes (logged out: a QR code
  waits) or opens again, with the ``connection.update`` (and ``qrcode.updated``) webhooks sent
  to ``webhook_url`` with the configured ``headers``
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devtools.fake_providers._gateway import (
    QR_DATA_URL,
    RECEIVED,
    FakeGateway,
    json_response,
    run_standalone,
)

MEDIA_TYPES = ("image", "document", "video", "audio")
_MESSAGE_KEYS = {
    "image": "imageMessage",
    "document": "documentMessage",
    "video": "videoMessage",
    "audio": "audioMessage",
}


def _error(status: int, error: str, message: Any) -> web.Response:
    return json_response({"status": status, "error": error, "response": {"message": message}}, status=status)


class FakeEvolution(FakeGateway):
    def __init__(
        self, *, api_key: str = "evolution-global-key", instances: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        #: instance name → its own token (also accepted as ``apikey``)
        self.instances: dict[str, str] = dict(instances or {"acme": "acme-instance-token"})
        self.closed: set[str] = set()
        self.not_on_whatsapp: set[str] = set()
        self.sent: list[dict[str, Any]] = []

    def close_instance(self, name: str) -> None:
        self.closed.add(name)

    # --- the instance's session and its webhooks ----------------------------------------------

    def _envelope(self, event: str, instance: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "event": event,
            "instance": instance,
            "data": data,
            "destination": self.webhook_url,
            "date_time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "sender": "5511888887777@s.whatsapp.net",
            "server_url": self.base_url,
            "apikey": None,
        }

    async def drop_instance(self, name: str, *, webhook: bool = True) -> None:
        """The phone logged out (401): sends fail with ``Connection Closed`` and a QR code waits."""
        self.closed.add(name)
        if webhook:
            data = {"instance": name, "state": "close", "statusReason": 401}
            await self.send_webhook(self._envelope("connection.update", name, data))
            qr = {"qrcode": {"instance": name, "pairingCode": None, "code": "2@fake", "base64": QR_DATA_URL}}
            await self.send_webhook(self._envelope("qrcode.updated", name, qr))

    async def restore_instance(self, name: str, *, webhook: bool = True) -> None:
        """The QR code was scanned: the instance is open again."""
        self.closed.discard(name)
        if webhook:
            data = {
                "instance": name,
                "wuid": "5511888887777@s.whatsapp.net",
                "profileName": "Acme Sales",
                "profilePictureUrl": None,
                "state": "open",
                "statusReason": 200,
            }
            await self.send_webhook(self._envelope("connection.update", name, data))

    def _instance_guard(self, request: web.Request) -> str | web.Response:
        instance = request.match_info["instance"]
        key = request.headers.get("apikey")
        if not key or key not in (self.api_key, self.instances.get(instance)):
            return _error(401, "Unauthorized", "Unauthorized")
        if instance not in self.instances:
            return _error(404, "Not Found", [f'The "{instance}" instance does not exist'])
        return instance

    async def _connection_state(self, request: web.Request) -> web.StreamResponse:
        instance = self._instance_guard(request)
        if isinstance(instance, web.Response):
            return instance
        state = "close" if instance in self.closed else "open"
        return json_response({"instance": {"instanceName": instance, "state": state}})

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        instance = self._instance_guard(request)
        if isinstance(instance, web.Response):
            return instance
        if instance not in self.closed:
            return json_response({"instance": {"instanceName": instance, "state": "open"}})
        return json_response({"pairingCode": None, "code": "2@fake", "base64": QR_DATA_URL, "count": 1})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/instance/connectionState/{instance}", self._connection_state)
        app.router.add_get("/instance/connect/{instance}", self._connect)
        app.router.add_post("/message/sendText/{instance}", self._send_text)
        app.router.add_post("/message/sendMedia/{instance}", self._send_media)

    # --- checks in Evolution's order: auth guard, instance guard, body schema, number check ---

    def _guard(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        instance = request.match_info["instance"]
        key = request.headers.get("apikey")
        if not key or key not in (self.api_key, self.instances.get(instance)):
            return _error(401, "Unauthorized", "Unauthorized")
        if instance not in self.instances:
            return _error(404, "Not Found", [f'The "{instance}" instance does not exist'])
        body = request[RECEIVED].json
        if not isinstance(body, dict):
            return _error(400, "Bad Request", ["request body must be a JSON object"])
        number = body.get("number")
        if not isinstance(number, str) or not number:
            return _error(400, "Bad Request", ['instance requires property "number"'])
        if instance in self.closed:
            return _error(500, "Internal Server Error", ["Error: Connection Closed"])
        digits = number.split("@")[0]
        if digits in self.not_on_whatsapp:
            return _error(
                400,
                "Bad Request",
                [{"exists": False, "jid": f"{digits}@s.whatsapp.net", "number": number}],
            )
        return instance, body

    def _answer(self, instance: str, number: str, message: dict[str, Any], message_type: str) -> web.Response:
        sent = {
            "key": {
                "remoteJid": f"{number.split('@')[0]}@s.whatsapp.net",
                "fromMe": True,
                "id": "3EB0" + uuid.uuid4().hex[:16].upper(),
            },
            "pushName": "",
            "status": "PENDING",
            "message": message,
            "contextInfo": None,
            "messageType": message_type,
            "messageTimestamp": int(time.time()),
            "instanceId": str(uuid.uuid5(uuid.NAMESPACE_URL, instance)),
            "source": "unknown",
        }
        self.sent.append(sent)
        return json_response(sent, status=201)

    async def _send_text(self, request: web.Request) -> web.StreamResponse:
        guarded = self._guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        instance, body = guarded
        text = body.get("text")
        if not isinstance(text, str) or not text:
            return _error(400, "Bad Request", ['instance requires property "text"'])
        return self._answer(instance, body["number"], {"conversation": text}, "conversation")

    async def _send_media(self, request: web.Request) -> web.StreamResponse:
        guarded = self._guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        instance, body = guarded
        mediatype = body.get("mediatype")
        if mediatype not in MEDIA_TYPES:
            return _error(400, "Bad Request", [f"instance.mediatype must be one of {', '.join(MEDIA_TYPES)}"])
        media = body.get("media")
        if not isinstance(media, str) or not media:
            return _error(400, "Bad Request", ['instance requires property "media"'])
        content: dict[str, Any] = {"url": media, "mimetype": body.get("mimetype")}
        if body.get("caption") and mediatype != "audio":
            content["caption"] = body["caption"]
        if mediatype == "document":
            content["fileName"] = body.get("fileName")
        key = _MESSAGE_KEYS[mediatype]
        return self._answer(instance, body["number"], {key: content}, key)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Evolution API for development")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", default="evolution-global-key")
    parser.add_argument("--instance", default="acme")
    args = parser.parse_args()
    run_standalone(FakeEvolution(api_key=args.api_key, instances={args.instance: ""}, port=args.port))


if __name__ == "__main__":
    main()
