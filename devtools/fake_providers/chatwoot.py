"""A local Chatwoot (Application API, 4.14) for tests: contacts, conversations and messages as
``../shared/contracts/chatwoot/application_swagger.json`` describes them, with Chatwoot's answers.

- auth: header ``api_access_token``; wrong or missing → 401 ``{"error": "Invalid Access Token"}``;
  an account the token's user is not in → 401 ``{"error": "You are not authorized to do this action"}``
- ``GET  /api/v1/accounts/{a}/contacts/search?q=`` → ``{"meta", "payload": [contact…]}``
- ``POST /api/v1/accounts/{a}/contacts`` (``inbox_id`` required; ``phone_number`` E.164 with
  ``+``, unique) → ``{"payload": {"contact", "contact_inbox"}}``; invalid → 422
- ``GET  /api/v1/accounts/{a}/contacts/{id}/conversations`` → ``{"payload": [conversation…]}``
- ``POST /api/v1/accounts/{a}/conversations`` (``source_id``, or ``inbox_id`` + ``contact_id``)
- ``GET  /api/v1/accounts/{a}/conversations/{id}`` → ``conversation_show`` (the contact as
  ``meta.sender``, as it is now)
- ``POST /api/v1/accounts/{a}/conversations/{id}/messages``, JSON or multipart with
  ``attachments[]``; ``input_select`` needs ``content_attributes.items`` of ``{title, value}``
- anything missing → 404 ``{"error": "Resource could not be found"}``
"""

from __future__ import annotations

import argparse
import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from devtools.fake_providers._gateway import RECEIVED, FakeGateway, Received, json_response, run_standalone

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
CONTENT_TYPES = ("text", "input_email", "cards", "input_select", "form", "article")
NOT_FOUND = {"error": "Resource could not be found"}


def _unprocessable(message: str, *attributes: str) -> web.Response:
    return json_response({"message": message, "attributes": list(attributes)}, status=422)


class FakeChatwoot(FakeGateway):
    def __init__(
        self,
        *,
        api_access_token: str = "chatwoot-token",
        account_id: int = 1,
        inbox_ids: tuple[int, ...] = (7,),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.api_access_token = api_access_token
        self.account_id = account_id
        self.inbox_ids = set(inbox_ids)
        self.contacts: dict[int, dict[str, Any]] = {}
        self.contact_inboxes: list[dict[str, Any]] = []  # {contact_id, inbox_id, source_id}
        self.conversations: dict[int, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []
        self._ids = {"contact": 0, "conversation": 0, "message": 0}

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    # --- test helpers -------------------------------------------------------------------

    def reset(self) -> None:
        """Wipe contacts, conversations and messages and number them from 1 again, as a Chatwoot
        reinstalled on a fresh database would: ids a client cached now name whoever is created
        next. The log of received requests is kept."""
        self.contacts.clear()
        self.contact_inboxes.clear()
        self.conversations.clear()
        self.messages.clear()
        self._ids = dict.fromkeys(self._ids, 0)

    def delete_conversation(self, conversation_id: int) -> None:
        self.conversations.pop(conversation_id, None)

    def add_contact(self, phone: str, *, name: str | None = None) -> dict[str, Any]:
        contact_id = self._next("contact")
        self.contacts[contact_id] = {"id": contact_id, "name": name or phone, "phone_number": phone}
        return self.contacts[contact_id]

    def add_conversation(self, contact_id: int, inbox_id: int, *, status: str = "open") -> dict[str, Any]:
        return self._create_conversation(contact_id, inbox_id, self._source_id(contact_id, inbox_id), status)

    # --- routes -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        base = "/api/v1/accounts/{account_id}"
        app.router.add_get(base + "/contacts/search", self._search)
        app.router.add_post(base + "/contacts", self._create_contact)
        app.router.add_get(base + "/contacts/{contact_id}/conversations", self._contact_conversations)
        app.router.add_post(base + "/conversations", self._new_conversation)
        app.router.add_get(base + "/conversations/{conversation_id}", self._show_conversation)
        app.router.add_post(base + "/conversations/{conversation_id}/messages", self._create_message)

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("api_access_token") != self.api_access_token:
            return json_response({"error": "Invalid Access Token"}, status=401)
        if request.match_info.get("account_id") != str(self.account_id):
            return json_response({"error": "You are not authorized to do this action"}, status=401)
        return None

    # --- shapes -------------------------------------------------------------------------

    def _inbox(self, inbox_id: int) -> dict[str, Any]:
        return {
            "id": inbox_id,
            "avatar_url": "",
            "channel_id": inbox_id,
            "name": f"WhatsApp {inbox_id}",
            "channel_type": "Channel::Whatsapp",
            "provider": "whatsapp_cloud",
        }

    def _contact_json(self, contact: dict[str, Any]) -> dict[str, Any]:
        return {
            "additional_attributes": {},
            "availability_status": "offline",
            "email": None,
            "id": contact["id"],
            "name": contact["name"],
            "phone_number": contact["phone_number"],
            "blocked": False,
            "identifier": None,
            "thumbnail": "",
            "custom_attributes": {},
            "last_activity_at": None,
            "created_at": int(time.time()),
            "contact_inboxes": [
                {"source_id": ci["source_id"], "inbox": self._inbox(ci["inbox_id"])}
                for ci in self.contact_inboxes
                if ci["contact_id"] == contact["id"]
            ],
        }

    def _source_id(self, contact_id: int, inbox_id: int) -> str:
        for ci in self.contact_inboxes:
            if ci["contact_id"] == contact_id and ci["inbox_id"] == inbox_id:
                return ci["source_id"]
        # a WhatsApp inbox names the contact by its wa_id (the digits)
        source_id = (self.contacts[contact_id]["phone_number"] or str(uuid.uuid4())).lstrip("+")
        self.contact_inboxes.append({"contact_id": contact_id, "inbox_id": inbox_id, "source_id": source_id})
        return source_id

    def _create_conversation(
        self, contact_id: int, inbox_id: int, source_id: str, status: str = "open"
    ) -> dict[str, Any]:
        conversation_id = self._next("conversation")
        now = int(time.time())
        conversation = {
            "id": conversation_id,
            "account_id": self.account_id,
            "inbox_id": inbox_id,
            "status": status,
            "contact_id": contact_id,
            "source_id": source_id,
            "uuid": str(uuid.uuid4()),
            "messages": [],
            "meta": {"sender": self._contact_json(self.contacts[contact_id]), "assignee": None, "team": None},
            "labels": [],
            "custom_attributes": {},
            "additional_attributes": {},
            "can_reply": True,
            "muted": False,
            "unread_count": 0,
            "created_at": now,
            "updated_at": now,
            "timestamp": now,
        }
        self.conversations[conversation_id] = conversation
        return conversation

    # --- handlers -----------------------------------------------------------------------

    async def _search(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        q = request.query.get("q", "").strip().lower()
        found = [
            self._contact_json(c)
            for c in self.contacts.values()
            if q and any(q in (c.get(k) or "").lower() for k in ("name", "phone_number"))
        ]
        return json_response({"meta": {"count": len(found), "current_page": 1}, "payload": found})

    async def _create_contact(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        body = request[RECEIVED].json
        if not isinstance(body, dict):
            return json_response({"errors": [{"message": "body must be a JSON object"}]}, status=400)
        inbox_id = body.get("inbox_id")
        if inbox_id not in self.inbox_ids:
            return json_response(NOT_FOUND, status=404)
        phone = body.get("phone_number")
        if phone is not None and not E164.match(str(phone)):
            return _unprocessable("Phone number should be in e164 format", "phone_number")
        if phone is not None and any(c["phone_number"] == phone for c in self.contacts.values()):
            return _unprocessable("Phone number has already been taken", "phone_number")
        contact = self.add_contact(phone, name=body.get("name"))
        source_id = self._source_id(contact["id"], inbox_id)
        return json_response(
            {
                "payload": {
                    "contact": self._contact_json(contact),
                    "contact_inbox": {"inbox": self._inbox(inbox_id), "source_id": source_id},
                }
            }
        )

    async def _contact_conversations(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            contact_id = int(request.match_info["contact_id"])
        except ValueError:
            return json_response(NOT_FOUND, status=404)
        if contact_id not in self.contacts:
            return json_response(NOT_FOUND, status=404)
        found = [
            {k: v for k, v in c.items() if k not in ("contact_id", "source_id")}
            for c in self.conversations.values()
            if c["contact_id"] == contact_id
        ]
        return json_response({"payload": found})

    async def _new_conversation(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        body = request[RECEIVED].json
        if not isinstance(body, dict):
            return json_response({"errors": [{"message": "body must be a JSON object"}]}, status=400)
        source_id = body.get("source_id")
        inbox_id, contact_id = body.get("inbox_id"), body.get("contact_id")
        if source_id and not (inbox_id and contact_id):
            link = next((ci for ci in self.contact_inboxes if ci["source_id"] == source_id), None)
            if link is None:
                return json_response(NOT_FOUND, status=404)
            inbox_id, contact_id = link["inbox_id"], link["contact_id"]
        if inbox_id not in self.inbox_ids or contact_id not in self.contacts:
            return json_response(NOT_FOUND, status=404)
        source_id = source_id or self._source_id(contact_id, inbox_id)
        conversation = self._create_conversation(
            contact_id, inbox_id, source_id, body.get("status") or "open"
        )
        return json_response({k: v for k, v in conversation.items() if k not in ("contact_id", "source_id")})

    async def _show_conversation(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            conversation = self.conversations.get(int(request.match_info["conversation_id"]))
        except ValueError:
            conversation = None
        if conversation is None:
            return json_response(NOT_FOUND, status=404)
        shown = {k: v for k, v in conversation.items() if k not in ("contact_id", "source_id")}
        sender = self._contact_json(self.contacts[conversation["contact_id"]])
        shown["meta"] = {**conversation["meta"], "sender": sender, "channel": "Channel::Whatsapp"}
        shown["messages"] = [m for m in self.messages if m["conversation_id"] == conversation["id"]]
        return json_response(shown)

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            conversation = self.conversations.get(int(request.match_info["conversation_id"]))
        except ValueError:
            conversation = None
        if conversation is None:
            return json_response(NOT_FOUND, status=404)
        received: Received = request[RECEIVED]
        params = received.json if received.json is not None else dict(received.form)
        if not isinstance(params, dict):
            return json_response({"errors": [{"message": "body must be a JSON object"}]}, status=400)
        if isinstance(params.get("content_attributes"), str):
            params["content_attributes"] = json.loads(params["content_attributes"])
        content = params.get("content")
        if not content and not received.files:
            return _unprocessable("Content can't be blank", "content")
        message_type = params.get("message_type", "outgoing")
        if message_type not in ("outgoing", "incoming"):
            return _unprocessable(f"'{message_type}' is not a valid message_type", "message_type")
        content_type = params.get("content_type", "text")
        if content_type not in CONTENT_TYPES:
            return _unprocessable(f"'{content_type}' is not a valid content_type", "content_type")
        attributes = params.get("content_attributes") or {}
        if content_type == "input_select":
            items = attributes.get("items") if isinstance(attributes, dict) else None
            if not items or any(not isinstance(i, dict) or set(i) - {"title", "value"} for i in items):
                return _unprocessable("Content attributes items is invalid", "content_attributes")
        template = params.get("template_params")
        if template is not None and (
            not isinstance(template, dict)
            or {"name", "category", "language", "processed_params"} - set(template)
        ):
            return _unprocessable("Template params is invalid", "template_params")
        message_id = self._next("message")
        message = {
            "id": message_id,
            "content": content,
            "account_id": self.account_id,
            "inbox_id": conversation["inbox_id"],
            "conversation_id": conversation["id"],
            "message_type": 1 if message_type == "outgoing" else 0,
            "content_type": content_type,
            "status": "sent",
            "content_attributes": attributes,
            "created_at": int(time.time()),
            "private": params.get("private") in (True, "true"),
            "source_id": None,
            "sender": {"id": 1, "name": "Herald", "type": "user"},
        }
        if received.files:
            message["attachments"] = [
                {
                    "id": message_id * 10 + i,
                    "message_id": message_id,
                    "file_type": (f.content_type or "").split("/")[0]
                    if (f.content_type or "").split("/")[0] in ("image", "audio", "video")
                    else "file",
                    "account_id": self.account_id,
                    "extension": (f.filename or "").rsplit(".", 1)[-1] if "." in (f.filename or "") else None,
                    "data_url": f"{self.base_url}/rails/active_storage/blobs/{message_id}-{i}/{f.filename}",
                    "file_size": len(f.data),
                }
                for i, f in enumerate(received.files)
            ]
        self.messages.append(message)
        return json_response(message)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Chatwoot for development")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--token", default="chatwoot-token")
    parser.add_argument("--account-id", type=int, default=1)
    parser.add_argument("--inbox-id", type=int, default=7)
    args = parser.parse_args()
    run_standalone(
        FakeChatwoot(
            api_access_token=args.token,
            account_id=args.account_id,
            inbox_ids=(args.inbox_id,),
            port=args.port,
        )
    )


if __name__ == "__main__":
    main()
