"""Chatwoot adapter: an outgoing message in the channel's inbox, which Chatwoot delivers.

Contract: ``../shared/contracts/chatwoot/application_swagger.json`` (Application API, header
``api_access_token``). Chatwoot addresses conversations, not phone numbers, so a send is:

1. the phone → (contact, conversation) mapping from the ``MappingStore`` (key
   ``chatwoot:<inbox_id>:<E.164>``); when it is missing:
   a. ``GET /contacts/search?q=<E.164>``, keeping only an exact ``phone_number`` match, else
      ``POST /contacts`` (``inbox_id``, ``name``, ``phone_number``);
   b. ``GET /contacts/{id}/conversations``, keeping the newest open/pending one in the inbox,
      else ``POST /conversations`` (``inbox_id``, ``contact_id``, ``source_id`` when known);
2. a cached mapping is checked before anything is posted to it: ``GET /conversations/{id}``
   must answer a conversation in the channel's inbox whose contact (``meta.sender``) has the
   recipient's phone number. A Chatwoot that was reset (or restored, or had the conversation
   deleted) renumbers its contacts and conversations, so a cached id can name someone else's
   conversation: then (or on a 404) the mapping is dropped and step 1 runs again, once, and the
   re-resolution is written into the message's history (``SendResult.notes``);
3. ``POST /conversations/{id}/messages``. A 404 there (deleted between the check and the post)
   also drops the mapping and runs step 1 again, once.

The check costs one GET per send on a cached mapping, and it is never skipped. Skipping it for
a mapping this process resolved or checked moments ago was considered and rejected: a reset is
invisible from here (the ids just start pointing elsewhere), so a time window only makes a
message to the wrong person less likely, never impossible, while a GET costs milliseconds next
to the post itself. A mapping found by step 1 in the same send is not checked again: it was
read from Chatwoot by phone number an instant before.

Kinds: text → ``content``; media → the link is fetched and uploaded as ``attachments[]``
(multipart; Chatwoot takes no media URL); quick replies and lists → ``content_type:
input_select`` with ``items`` ``{title, value}`` (Chatwoot's WhatsApp inboxes turn them into
interactive buttons, or a list past three items); templates → ``template_params``
(``processed_params`` body ``{"1": …}``, media header, URL buttons).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from services.sender.providers import gateway
from services.sender.providers.base import (
    ChannelConfig,
    Failure,
    LookupUnsupported,
    MappingStore,
    Outbound,
    ProviderError,
    SendResult,
)
from shared.events import ButtonsContent, ListContent, MediaContent, TemplateContent, TextContent
from shared.phone import InvalidPhoneNumber, normalize_e164

NAME = "Chatwoot"
#: WhatsApp's largest media (documents); a bigger file is refused before the upload
MAX_MEDIA_BYTES = 100 * 1024 * 1024
TEMPLATE_CATEGORIES = ("UTILITY", "MARKETING", "SHIPPING_UPDATE", "TICKET_UPDATE", "ISSUE_RESOLUTION")


def classify_chatwoot_error(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, step: str = "request"
) -> ProviderError:
    """A Chatwoot error answer as a failure. ``step`` names what was being done, for the reason.

    - 401 (``Invalid Access Token``), 403 (the token's user may not use this account or inbox)
      → pause the channel
    - 404: the account, inbox, contact or conversation does not exist → permanent (the adapter
      handles a stale cached conversation itself before it gets here)
    - 400/422: Chatwoot refused the data (e.g. a phone number it does not accept) → permanent
    - 429, 5xx → retry (honouring ``Retry-After``)
    """
    detail = gateway.error_detail(body, f"HTTP {status}")
    if status == 403:
        return ProviderError(
            f"Chatwoot refused to {step} (403: {detail}): give the token's user access to the "
            "channel's account and inbox",
            failure=Failure.PAUSE_CHANNEL,
            code="403",
            http_status=status,
        )
    if status == 404:
        return ProviderError(
            f"Chatwoot could not {step} (404: {detail}): check the channel's account_id and inbox_id",
            failure=Failure.PERMANENT,
            code="404",
            http_status=status,
        )
    if status in (400, 422):
        return ProviderError(
            f"Chatwoot refused to {step} ({status}: {detail})",
            failure=Failure.PERMANENT,
            code=str(status),
            http_status=status,
        )
    return gateway.generic_http_error(NAME, status, detail, headers)


@dataclass(frozen=True)
class _Post:
    """One message post: a JSON body, or form fields plus one file."""

    fields: dict[str, Any]
    file: tuple[str, bytes, str] | None = None
    degraded: str | None = None


class _ConversationGone(Exception):
    pass


def _same_phone(theirs: Any, ours: str) -> bool:
    """Whether Chatwoot's ``phone_number`` is the recipient's number, in whatever form it was typed."""
    if not isinstance(theirs, str) or not theirs:
        return False
    with contextlib.suppress(InvalidPhoneNumber):
        return normalize_e164(theirs) == normalize_e164(ours)
    return theirs == ours


def _folded(body: str, header: str | None, footer: str | None) -> str:
    return "\n\n".join(part for part in (header, body, footer) if part)


def message_fields(
    content: TextContent | ButtonsContent | ListContent | TemplateContent, *, category: str
) -> tuple[dict[str, Any], str | None]:
    """The JSON body (and degraded reason) for every kind but media; pure."""
    common = {"message_type": "outgoing", "private": False}
    if isinstance(content, TextContent):
        return {**common, "content": content.body, "content_type": "text"}, None
    if isinstance(content, ButtonsContent):
        fields = {
            **common,
            "content": _folded(content.body, content.header, content.footer),
            "content_type": "input_select",
            "content_attributes": {"items": [{"title": b.title, "value": b.id} for b in content.buttons]},
        }
        degraded = (
            "header/footer folded into the text: Chatwoot's input_select has neither"
            if content.header or content.footer
            else None
        )
        return fields, degraded
    if isinstance(content, ListContent):
        rows = [row for section in content.sections for row in section.rows]
        fields = {
            **common,
            "content": _folded(content.body, content.header, content.footer),
            "content_type": "input_select",
            "content_attributes": {"items": [{"title": r.title, "value": r.id} for r in rows]},
        }
        return fields, (
            "list sent as Chatwoot input_select options: the menu label, section titles and row "
            "descriptions are not carried"
        )
    # template
    if content.header is not None and content.header.type == "text":
        raise gateway.unsupported(
            NAME,
            "template with a text header parameter",
            "Chatwoot's template_params carry only media headers; use a template without a header "
            "variable or a meta channel",
        )
    processed: dict[str, Any] = {
        "body": {str(i): value for i, value in enumerate(content.body_params, start=1)}
    }
    if content.header is not None:
        processed["header"] = {"media_url": content.header.link, "media_type": content.header.type}
    url_buttons = [b for b in content.buttons if b.sub_type == "url"]
    if url_buttons:
        processed["buttons"] = [{"type": "url", "parameter": b.parameter} for b in url_buttons]
    degraded = None
    if len(url_buttons) != len(content.buttons):
        degraded = (
            "template quick-reply payloads dropped: Chatwoot's template_params carry only URL and "
            "copy-code buttons, so replies carry the button text"
        )
    rendered = f"Template {content.name} ({content.language})"
    if content.body_params:
        rendered += ": " + " | ".join(content.body_params)
    fields = {
        **common,
        "content": rendered,
        "content_type": "text",
        "template_params": {
            "name": content.name,
            "category": category,
            "language": content.language,
            "processed_params": processed,
        },
    }
    return fields, degraded


class ChatwootProvider:
    name = "chatwoot"

    def __init__(self, http: httpx.AsyncClient, store: MappingStore) -> None:
        self._http = http
        self._store = store

    # --- the send -------------------------------------------------------------------------

    async def send(self, channel: ChannelConfig, message: Outbound) -> SendResult:
        account_id, inbox_id = self._ids(channel)
        post = await self._prepare(channel, message.content)
        key = f"chatwoot:{inbox_id}:{message.to}"
        cached = await self._store.get(channel.id, key)
        stale: tuple[int, str] | None = None  # (the cached conversation, why it was not used)
        if cached is not None:
            conversation_id = int(json.loads(cached)["conversation_id"])
            why = await self._cached_is_wrong(channel, account_id, inbox_id, conversation_id, message.to)
            if why is None:
                try:
                    return await self._post(channel, account_id, conversation_id, post)
                except _ConversationGone:
                    why = "is gone (404)"
            stale = (conversation_id, why)
            await self._store.delete(channel.id, key)
        contact_id, source_id = await self._contact(channel, account_id, inbox_id, message.to)
        conversation_id = await self._conversation(channel, account_id, inbox_id, contact_id, source_id)
        await self._store.put(
            channel.id, key, json.dumps({"contact_id": contact_id, "conversation_id": conversation_id})
        )
        try:
            result = await self._post(channel, account_id, conversation_id, post)
        except _ConversationGone:
            raise ProviderError(
                f"Chatwoot lost conversation {conversation_id} right after finding it",
                failure=Failure.RETRY,
                code="404",
                http_status=404,
            ) from None
        if stale is None:
            return result
        old, why = stale
        note = f"cached Chatwoot conversation {old} {why}: re-resolved to conversation {conversation_id}"
        return dataclasses.replace(result, notes=(*result.notes, note))

    async def _cached_is_wrong(
        self, channel: ChannelConfig, account_id: int, inbox_id: int, conversation_id: int, phone: str
    ) -> str | None:
        """None when the cached conversation still is the recipient's in this inbox, else why not.

        One ``GET /conversations/{id}`` (``conversation_show``: ``inbox_id`` and the contact as
        ``meta.sender``). A 404 means gone; any other error answer is classified as for every
        other step (a 5xx is retried, a 401 pauses the channel), so nothing is posted unchecked.
        """
        url = self._url(channel, account_id, f"/conversations/{conversation_id}")
        response = await gateway.call(NAME, self._http, "GET", url, headers=self._headers(channel))
        body = gateway.json_body(response)
        if response.status_code == 404:
            return "is gone (404)"
        if response.status_code >= 300:
            raise classify_chatwoot_error(
                response.status_code, body, response.headers, step="read the cached conversation"
            )
        if not isinstance(body, dict):
            return "could not be checked (no conversation in Chatwoot's answer)"
        if body.get("inbox_id") != inbox_id:
            return f"is in inbox {body.get('inbox_id')} now, not {inbox_id}"
        sender = (body.get("meta") or {}).get("sender") or {}
        if not _same_phone(sender.get("phone_number"), phone):
            return "belongs to another contact now"
        return None

    async def lookup(self, channel: ChannelConfig, message: Outbound) -> str | None:
        raise LookupUnsupported("Chatwoot messages carry no client reference Herald can search by")

    # --- steps ----------------------------------------------------------------------------

    @staticmethod
    def _ids(channel: ChannelConfig) -> tuple[int, int]:
        try:
            return int(channel.settings["account_id"]), int(channel.settings["inbox_id"])
        except (KeyError, ValueError):
            raise ProviderError(
                "the channel needs numeric Chatwoot 'account_id' and 'inbox_id' settings: set them",
                failure=Failure.PAUSE_CHANNEL,
                code="channel_misconfigured",
            ) from None

    def _headers(self, channel: ChannelConfig) -> dict[str, str]:
        return {"api_access_token": channel.credentials.get("api_access_token", "")}

    def _url(self, channel: ChannelConfig, account_id: int, path: str) -> str:
        return f"{channel.base_url.rstrip('/')}/api/v1/accounts/{account_id}{path}"

    async def _request(
        self, channel: ChannelConfig, method: str, url: str, *, step: str, **kwargs: Any
    ) -> Any:
        response = await gateway.call(NAME, self._http, method, url, headers=self._headers(channel), **kwargs)
        body = gateway.json_body(response)
        if response.status_code >= 300:
            raise classify_chatwoot_error(response.status_code, body, response.headers, step=step)
        return body

    async def _prepare(self, channel: ChannelConfig, content: Any) -> _Post:
        if isinstance(content, MediaContent):
            data, mime = await self._fetch_media(content)
            fields: dict[str, Any] = {"message_type": "outgoing", "private": "false"}
            if content.caption:
                fields["content"] = content.caption
            return _Post(fields=fields, file=(gateway.media_filename(content), data, mime))
        category = (channel.settings.get("template_category") or "UTILITY").upper()
        if category not in TEMPLATE_CATEGORIES:
            category = "UTILITY"
        fields, degraded = message_fields(content, category=category)
        return _Post(fields=fields, degraded=degraded)

    async def _fetch_media(self, media: MediaContent) -> tuple[bytes, str]:
        try:
            response = await self._http.get(media.link, follow_redirects=True)
        except httpx.TransportError as exc:
            raise gateway.transport_error(f"the media link {media.link}", exc, sending=False) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderError(
                f"the media link {media.link} answered {response.status_code}",
                failure=Failure.RETRY,
                code="media_unavailable",
                retry_after=gateway.parse_retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 300:
            raise ProviderError(
                f"the media link {media.link} answered {response.status_code}: give a public link",
                failure=Failure.PERMANENT,
                code="media_unreachable",
            )
        if len(response.content) > MAX_MEDIA_BYTES:
            raise ProviderError(
                f"the media at {media.link} is {len(response.content)} bytes, over WhatsApp's "
                f"{MAX_MEDIA_BYTES}: send a smaller file",
                failure=Failure.PERMANENT,
                code="media_too_large",
            )
        mime = media.mime_type or response.headers.get("content-type", "").split(";")[0].strip()
        return response.content, mime or gateway.media_mime_type(media)

    async def _contact(
        self, channel: ChannelConfig, account_id: int, inbox_id: int, phone: str
    ) -> tuple[int, str | None]:
        """(contact id, its source id in the inbox if known): found by exact phone, else created."""
        for _ in range(2):
            found = await self._request(
                channel,
                "GET",
                self._url(channel, account_id, "/contacts/search"),
                params={"q": phone, "page": 1},
                step="search contacts",
            )
            for contact in (found or {}).get("payload", []):
                if contact.get("phone_number") == phone:
                    source_id = next(
                        (
                            ci.get("source_id")
                            for ci in contact.get("contact_inboxes") or []
                            if (ci.get("inbox") or {}).get("id") == inbox_id
                        ),
                        None,
                    )
                    return int(contact["id"]), source_id
            response = await gateway.call(
                NAME,
                self._http,
                "POST",
                self._url(channel, account_id, "/contacts"),
                headers=self._headers(channel),
                json={"inbox_id": inbox_id, "name": phone, "phone_number": phone},
            )
            body = gateway.json_body(response)
            if response.status_code == 422 and "taken" in gateway.error_detail(body, ""):
                continue  # created meanwhile by another sender: search again
            if response.status_code >= 300:
                raise classify_chatwoot_error(
                    response.status_code, body, response.headers, step="create the contact"
                )
            payload = (body or {}).get("payload", {})
            contact = payload.get("contact", {})
            source_id = (payload.get("contact_inbox") or {}).get("source_id")
            return int(contact["id"]), source_id
        raise ProviderError(
            f"Chatwoot says a contact with {phone} exists but its search does not return it: check "
            "that contact's phone number in Chatwoot",
            failure=Failure.PERMANENT,
            code="contact_not_found",
        )

    async def _conversation(
        self, channel: ChannelConfig, account_id: int, inbox_id: int, contact_id: int, source_id: str | None
    ) -> int:
        """The newest open or pending conversation of the contact in the inbox, else a new one."""
        found = await self._request(
            channel,
            "GET",
            self._url(channel, account_id, f"/contacts/{contact_id}/conversations"),
            step="list the contact's conversations",
        )
        candidates = [
            c
            for c in (found or {}).get("payload", [])
            if c.get("inbox_id") == inbox_id and c.get("status") in ("open", "pending")
        ]
        if candidates:
            return int(max(candidates, key=lambda c: c["id"])["id"])
        body: dict[str, Any] = {"inbox_id": inbox_id, "contact_id": contact_id}
        if source_id:
            body["source_id"] = source_id
        created = await self._request(
            channel,
            "POST",
            self._url(channel, account_id, "/conversations"),
            json=body,
            step="create a conversation",
        )
        return int(created["id"])

    async def _post(
        self, channel: ChannelConfig, account_id: int, conversation_id: int, post: _Post
    ) -> SendResult:
        url = self._url(channel, account_id, f"/conversations/{conversation_id}/messages")
        if post.file is None:
            kwargs: dict[str, Any] = {"json": post.fields}
        else:
            kwargs = {"data": post.fields, "files": [("attachments[]", post.file)]}
        response = await gateway.call(NAME, self._http, "POST", url, headers=self._headers(channel), **kwargs)
        body = gateway.json_body(response)
        if response.status_code == 404:
            raise _ConversationGone
        if response.status_code >= 300:
            raise classify_chatwoot_error(
                response.status_code, body, response.headers, step="post the message"
            )
        message_id = body.get("id") if isinstance(body, dict) else None
        if message_id is None:
            raise ProviderError(
                f"Chatwoot answered {response.status_code} without a message id ({str(body)[:200]}): "
                "the message may have been posted; check the conversation before replaying",
                failure=Failure.PERMANENT,
                code="bad_response",
                http_status=response.status_code,
            )
        return SendResult(provider_message_id=str(message_id), degraded=post.degraded)
