"""The Chatwoot adapter over real HTTP against the local Chatwoot server: the contact and
conversation lookup, its cache, what is posted for each message kind, and the error answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devtools.fake_providers.chatwoot import FakeChatwoot
from services.sender.providers.base import Failure, LookupUnsupported, MemoryMappingStore, ProviderError
from services.sender.providers.chatwoot import ChatwootProvider
from shared.events import MediaContent, TemplateButton, TemplateHeader
from tests.integration._gateways import (
    BUTTONS,
    LIST,
    RECIPIENT,
    TEMPLATE,
    TEXT,
    TRANSPORTS,
    channel,
    http_client,
    outbound,
)

ACCOUNT, INBOX = 3, 7
PREFIX = f"/api/v1/accounts/{ACCOUNT}"
OUTGOING = {"message_type": "outgoing", "private": False}


@pytest.fixture
async def chatwoot() -> AsyncIterator[FakeChatwoot]:
    async with FakeChatwoot(api_access_token="cw-token", account_id=ACCOUNT, inbox_ids=(INBOX, 8)) as fake:
        yield fake


@pytest.fixture(params=TRANSPORTS)
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(request.param) as client:
        yield client


def _channel(fake: FakeChatwoot, *, account: int = ACCOUNT, inbox: int = INBOX, token: str = "cw-token"):
    return channel(
        "chatwoot",
        fake.base_url,
        {"account_id": str(account), "inbox_id": str(inbox)},
        {"api_access_token": token},
    )


def _calls(fake: FakeChatwoot) -> list[tuple[str, str]]:
    return [(r.method, r.path.removeprefix(PREFIX)) for r in fake.received]


async def test_the_first_message_creates_contact_and_conversation_then_posts(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    provider = ChatwootProvider(http, MemoryMappingStore())
    result = await provider.send(_channel(chatwoot), outbound(TEXT))

    assert _calls(chatwoot) == [
        ("GET", "/contacts/search"),
        ("POST", "/contacts"),
        ("GET", "/contacts/1/conversations"),
        ("POST", "/conversations"),
        ("POST", "/conversations/1/messages"),
    ]
    search, create_contact, _, create_conversation, post = chatwoot.received
    assert all(r.headers["api_access_token"] == "cw-token" for r in chatwoot.received)
    assert search.query == {"q": RECIPIENT, "page": "1"}
    assert create_contact.json == {"inbox_id": INBOX, "name": RECIPIENT, "phone_number": RECIPIENT}
    assert create_conversation.json == {"inbox_id": INBOX, "contact_id": 1, "source_id": "5511999998888"}
    assert post.json == {**OUTGOING, "content": TEXT.body, "content_type": "text"}
    assert result.provider_message_id == str(chatwoot.messages[-1]["id"])
    assert result.degraded is None
    assert chatwoot.conversations[1]["inbox_id"] == INBOX


async def test_the_second_message_uses_the_cached_conversation(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    chatwoot.received.clear()

    await ChatwootProvider(http, store).send(ch, outbound(BUTTONS))

    # one GET checks the cached conversation is still the recipient's, then the post
    assert _calls(chatwoot) == [("GET", "/conversations/1"), ("POST", "/conversations/1/messages")]
    assert json.loads(await store.get(ch.id, f"chatwoot:{INBOX}:{RECIPIENT}") or "{}") == {
        "contact_id": 1,
        "conversation_id": 1,
    }


async def test_a_deleted_conversation_is_found_again_and_the_cache_repaired(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    chatwoot.delete_conversation(1)
    chatwoot.received.clear()

    result = await ChatwootProvider(http, store).send(ch, outbound(TEXT))

    assert _calls(chatwoot) == [
        ("GET", "/conversations/1"),  # 404: gone
        ("GET", "/contacts/search"),
        ("GET", "/contacts/1/conversations"),
        ("POST", "/conversations"),
        ("POST", "/conversations/2/messages"),
    ]
    assert chatwoot.messages[-1]["conversation_id"] == 2
    assert result.provider_message_id == str(chatwoot.messages[-1]["id"])
    assert result.notes == ("cached Chatwoot conversation 1 is gone (404): re-resolved to conversation 2",)
    assert json.loads(await store.get(ch.id, f"chatwoot:{INBOX}:{RECIPIENT}") or "{}")["conversation_id"] == 2


async def test_a_conversation_deleted_between_the_check_and_the_post_is_found_again(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    chatwoot.fail(404, {"error": "Resource could not be found"}, path="/conversations/1/messages")
    chatwoot.received.clear()

    result = await ChatwootProvider(http, store).send(ch, outbound(TEXT))

    assert _calls(chatwoot)[:2] == [("GET", "/conversations/1"), ("POST", "/conversations/1/messages")]
    assert _calls(chatwoot)[-1] == ("POST", "/conversations/1/messages")  # found again: still open
    assert len(chatwoot.messages) == 2
    assert result.notes == ("cached Chatwoot conversation 1 is gone (404): re-resolved to conversation 1",)


STRANGER = "+5511977776666"


async def test_after_a_chatwoot_reset_a_cached_conversation_of_another_contact_gets_nothing(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    """A Chatwoot reinstalled on a fresh database numbers from 1 again: the conversation id Herald
    cached for the recipient now names a stranger's conversation."""
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    assert json.loads(await store.get(ch.id, f"chatwoot:{INBOX}:{RECIPIENT}") or "{}") == {
        "contact_id": 1,
        "conversation_id": 1,
    }
    chatwoot.reset()
    stranger = chatwoot.add_contact(STRANGER)  # contact 1 now
    theirs = chatwoot.add_conversation(stranger["id"], INBOX)  # conversation 1 now
    assert (stranger["id"], theirs["id"]) == (1, 1)
    chatwoot.received.clear()

    result = await ChatwootProvider(http, store).send(ch, outbound(BUTTONS))

    assert [m for m in chatwoot.messages if m["conversation_id"] == theirs["id"]] == []
    recipient = next(c for c in chatwoot.contacts.values() if c["phone_number"] == RECIPIENT)
    [message] = chatwoot.messages
    assert chatwoot.conversations[message["conversation_id"]]["contact_id"] == recipient["id"] == 2
    assert message["conversation_id"] == 2 and message["content"] == BUTTONS.body
    assert result.provider_message_id == str(message["id"])
    assert result.notes == (
        "cached Chatwoot conversation 1 belongs to another contact now: re-resolved to conversation 2",
    )
    assert result.history_note == result.notes[0]
    assert _calls(chatwoot) == [
        ("GET", "/conversations/1"),  # the stranger's: not posted to
        ("GET", "/contacts/search"),
        ("POST", "/contacts"),
        ("GET", "/contacts/2/conversations"),
        ("POST", "/conversations"),
        ("POST", "/conversations/2/messages"),
    ]
    assert json.loads(await store.get(ch.id, f"chatwoot:{INBOX}:{RECIPIENT}") or "{}") == {
        "contact_id": 2,
        "conversation_id": 2,
    }

    # the repaired mapping is used (and checked) from then on, with nothing more to say
    chatwoot.received.clear()
    again = await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    assert _calls(chatwoot) == [("GET", "/conversations/2"), ("POST", "/conversations/2/messages")]
    assert again.notes == () and again.history_note is None


async def test_a_cached_conversation_moved_to_another_inbox_is_not_used(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    chatwoot.reset()
    recipient = chatwoot.add_contact(RECIPIENT)
    chatwoot.add_conversation(recipient["id"], 8)  # conversation 1 is the recipient's, in inbox 8

    result = await ChatwootProvider(http, store).send(ch, outbound(TEXT))

    [message] = chatwoot.messages
    assert chatwoot.conversations[message["conversation_id"]]["inbox_id"] == INBOX
    assert message["conversation_id"] == 2
    assert result.notes == (
        f"cached Chatwoot conversation 1 is in inbox 8 now, not {INBOX}: re-resolved to conversation 2",
    )


async def test_a_cached_conversation_that_is_still_the_recipients_after_a_reset_is_used(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    """Renumbered, but by chance the same person: the phone number decides, not the contact id."""
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    chatwoot.reset()
    recipient = chatwoot.add_contact("+55 11 99999-8888")  # RECIPIENT, as an agent typed it
    chatwoot.add_conversation(recipient["id"], INBOX)
    chatwoot.received.clear()

    result = await ChatwootProvider(http, store).send(ch, outbound(TEXT))

    assert _calls(chatwoot) == [("GET", "/conversations/1"), ("POST", "/conversations/1/messages")]
    assert result.notes == ()


async def test_an_error_while_checking_the_cached_conversation_posts_nothing(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    store = MemoryMappingStore()
    ch = _channel(chatwoot)
    await ChatwootProvider(http, store).send(ch, outbound(TEXT))
    chatwoot.fail(503, None, path="/conversations/1")

    with pytest.raises(ProviderError) as caught:
        await ChatwootProvider(http, store).send(ch, outbound(TEXT))

    assert (caught.value.failure, caught.value.code) == (Failure.RETRY, "503")
    assert len(chatwoot.messages) == 1
    assert await store.get(ch.id, f"chatwoot:{INBOX}:{RECIPIENT}") is not None


async def test_an_existing_contact_and_open_conversation_are_reused(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    lookalike = chatwoot.add_contact(RECIPIENT + "1")  # the search is fuzzy: it finds this one too
    contact = chatwoot.add_contact(RECIPIENT)
    chatwoot.add_conversation(contact["id"], INBOX, status="resolved")
    chatwoot.add_conversation(contact["id"], 8)  # another inbox
    open_one = chatwoot.add_conversation(contact["id"], INBOX, status="open")
    chatwoot.add_conversation(lookalike["id"], INBOX)

    await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(TEXT))

    assert _calls(chatwoot) == [
        ("GET", "/contacts/search"),
        ("GET", f"/contacts/{contact['id']}/conversations"),
        ("POST", f"/conversations/{open_one['id']}/messages"),
    ]


async def test_only_resolved_conversations_means_a_new_one(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    contact = chatwoot.add_contact(RECIPIENT)
    chatwoot.add_conversation(contact["id"], INBOX, status="resolved")

    await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(TEXT))

    assert ("POST", "/conversations") in _calls(chatwoot)
    assert chatwoot.messages[-1]["conversation_id"] == 2


EMPTY_SEARCH = {"meta": {"count": 0, "current_page": 1}, "payload": []}


async def test_a_contact_created_meanwhile_by_another_sender_is_found_again(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    contact = chatwoot.add_contact(RECIPIENT)
    chatwoot.fail(200, EMPTY_SEARCH, path="/contacts/search")  # the first search misses it

    await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(TEXT))

    assert _calls(chatwoot)[:4] == [
        ("GET", "/contacts/search"),
        ("POST", "/contacts"),  # 422 "Phone number has already been taken"
        ("GET", "/contacts/search"),
        ("GET", f"/contacts/{contact['id']}/conversations"),
    ]
    assert len(chatwoot.contacts) == 1
    assert chatwoot.messages[-1]["content"] == TEXT.body


async def test_a_contact_search_never_returns_fails_with_what_to_check(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    chatwoot.add_contact(RECIPIENT)
    chatwoot.fail(200, EMPTY_SEARCH, path="/contacts/search", times=2)
    with pytest.raises(ProviderError) as caught:
        await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(TEXT))
    assert (caught.value.failure, caught.value.code) == (Failure.PERMANENT, "contact_not_found")
    assert chatwoot.messages == []


@pytest.mark.parametrize(
    ("content", "expected", "degraded"),
    [
        (
            BUTTONS,
            {
                **OUTGOING,
                "content": "Confirm your appointment?",
                "content_type": "input_select",
                "content_attributes": {
                    "items": [
                        {"title": "Confirm", "value": "confirm:123"},
                        {"title": "Reschedule", "value": "resched:123"},
                    ]
                },
            },
            None,
        ),
        (
            BUTTONS.model_copy(update={"header": "Dentist", "footer": "Reply by 6 pm"}),
            {
                **OUTGOING,
                "content": "Dentist\n\nConfirm your appointment?\n\nReply by 6 pm",
                "content_type": "input_select",
                "content_attributes": {
                    "items": [
                        {"title": "Confirm", "value": "confirm:123"},
                        {"title": "Reschedule", "value": "resched:123"},
                    ]
                },
            },
            "header/footer folded into the text",
        ),
        (
            LIST,
            {
                **OUTGOING,
                "content": "Pick a slot",
                "content_type": "input_select",
                "content_attributes": {
                    "items": [
                        {"title": "09:00", "value": "slot:1"},
                        {"title": "10:00", "value": "slot:2"},
                        {"title": "14:00", "value": "slot:3"},
                    ]
                },
            },
            "list sent as Chatwoot input_select options",
        ),
        (
            TEMPLATE,
            {
                **OUTGOING,
                "content": "Template appointment_reminder (pt_BR): Maria | 02/06 10:00",
                "content_type": "text",
                "template_params": {
                    "name": "appointment_reminder",
                    "category": "UTILITY",
                    "language": "pt_BR",
                    "processed_params": {
                        "body": {"1": "Maria", "2": "02/06 10:00"},
                        "header": {"media_url": "https://cdn.example.com/logo.png", "media_type": "image"},
                        "buttons": [{"type": "url", "parameter": "abc123"}],
                    },
                },
            },
            None,
        ),
        (
            TEMPLATE.model_copy(
                update={
                    "header": None,
                    "buttons": [TemplateButton(index=0, sub_type="quick_reply", parameter="YES")],
                }
            ),
            {
                **OUTGOING,
                "content": "Template appointment_reminder (pt_BR): Maria | 02/06 10:00",
                "content_type": "text",
                "template_params": {
                    "name": "appointment_reminder",
                    "category": "UTILITY",
                    "language": "pt_BR",
                    "processed_params": {"body": {"1": "Maria", "2": "02/06 10:00"}},
                },
            },
            "template quick-reply payloads dropped",
        ),
    ],
    ids=["buttons", "buttons-header-footer", "list", "template", "template-quick-reply"],
)
async def test_interactive_and_template_kinds_are_posted_as_chatwoot_expects(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient, content: Any, expected: dict, degraded: str | None
) -> None:
    result = await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(content))
    post = chatwoot.received[-1]
    assert post.path == f"{PREFIX}/conversations/1/messages"
    assert post.json == expected
    assert (result.degraded or "").startswith(degraded or "")
    assert (result.degraded is None) == (degraded is None)


@pytest.mark.parametrize(
    ("kind", "name", "mime", "caption"),
    [
        ("image", "receipt.jpg", "image/jpeg", "Your receipt"),
        ("document", "invoice.pdf", "application/pdf", "Invoice"),
        ("audio", "hello.ogg", "audio/ogg", None),
        ("video", "howto.mp4", "video/mp4", "How to"),
    ],
)
async def test_media_is_fetched_and_uploaded_as_an_attachment(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient, kind: str, name: str, mime: str, caption: str | None
) -> None:
    data = f"{kind} bytes".encode() * 100
    link = chatwoot.add_media(name, data, mime)
    media = MediaContent(kind=kind, link=link, caption=caption)  # type: ignore[arg-type]

    result = await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(media))

    post = chatwoot.received[-1]
    assert post.headers["content-type"].startswith("multipart/form-data")
    expected_form = {"message_type": "outgoing", "private": "false"}
    if caption:
        expected_form["content"] = caption
    assert post.form == expected_form
    [upload] = post.files
    assert (upload.field, upload.filename, upload.content_type, upload.data) == (
        "attachments[]",
        name,
        mime,
        data,
    )
    assert chatwoot.messages[-1]["attachments"][0]["file_size"] == len(data)
    assert result.degraded is None


async def test_a_media_link_that_is_gone_fails_permanently(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    media = MediaContent(kind="image", link=chatwoot.media_url("missing.jpg"))
    with pytest.raises(ProviderError) as caught:
        await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(media))
    assert (caught.value.failure, caught.value.code) == (Failure.PERMANENT, "media_unreachable")
    assert chatwoot.received == []


async def test_a_template_with_a_text_header_fails_before_any_call(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    template = TEMPLATE.model_copy(update={"header": TemplateHeader(type="text", text="Hi")})
    with pytest.raises(ProviderError) as caught:
        await ChatwootProvider(http, MemoryMappingStore()).send(_channel(chatwoot), outbound(template))
    assert (caught.value.failure, caught.value.code) == (Failure.PERMANENT, "unsupported_kind")
    assert chatwoot.received == []


async def _send_error(
    fake: FakeChatwoot, http: httpx.AsyncClient, to: str = RECIPIENT, **kwargs: Any
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await ChatwootProvider(http, MemoryMappingStore()).send(
            _channel(fake, **kwargs), outbound(TEXT, to=to)
        )
    return caught.value


async def test_a_wrong_token_pauses_the_channel(chatwoot: FakeChatwoot, http: httpx.AsyncClient) -> None:
    error = await _send_error(chatwoot, http, token="wrong")
    assert (error.failure, error.code) == (Failure.PAUSE_CHANNEL, "401")
    assert "Invalid Access Token" in error.reason


async def test_an_account_the_token_cannot_use_pauses_the_channel(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    error = await _send_error(chatwoot, http, account=99)
    assert error.failure is Failure.PAUSE_CHANNEL


async def test_a_missing_inbox_is_permanent(chatwoot: FakeChatwoot, http: httpx.AsyncClient) -> None:
    error = await _send_error(chatwoot, http, inbox=404)
    assert (error.failure, error.code) == (Failure.PERMANENT, "404")
    assert "inbox_id" in error.reason


async def test_a_number_chatwoot_refuses_is_permanent(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    error = await _send_error(chatwoot, http, to="+0123")
    assert (error.failure, error.code) == (Failure.PERMANENT, "422")
    assert "e164" in error.reason


async def test_rate_limit_on_the_post_honours_retry_after(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    chatwoot.fail(429, {"error": "Too many requests"}, headers={"Retry-After": "12"}, path="/messages")
    error = await _send_error(chatwoot, http)
    assert (error.failure, error.code, error.retry_after) == (Failure.RETRY, "429", 12.0)


async def test_a_server_error_during_the_search_is_retried(
    chatwoot: FakeChatwoot, http: httpx.AsyncClient
) -> None:
    chatwoot.fail(503, None, path="/contacts/search")
    error = await _send_error(chatwoot, http)
    assert (error.failure, error.code) == (Failure.RETRY, "503")


async def test_a_timeout_is_retried(chatwoot: FakeChatwoot, http: httpx.AsyncClient) -> None:
    chatwoot.delay(1.0, path="/messages")
    error = await _send_error(chatwoot, http)
    assert (error.failure, error.code) == (Failure.RETRY, "timeout")


async def test_a_dropped_connection_is_retried(chatwoot: FakeChatwoot, http: httpx.AsyncClient) -> None:
    chatwoot.drop(path="/messages")
    error = await _send_error(chatwoot, http)
    assert (error.failure, error.code) == (Failure.RETRY, "connection")


async def test_lookup_is_unsupported(chatwoot: FakeChatwoot, http: httpx.AsyncClient) -> None:
    with pytest.raises(LookupUnsupported):
        await ChatwootProvider(http, MemoryMappingStore()).lookup(_channel(chatwoot), outbound(TEXT))
