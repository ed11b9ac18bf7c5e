"""The one interface every WhatsApp provider adapter implements.

A provider turns one ``Outbound`` (a message with its content, already checked and allowed to go
now) into one call to its service through one ``ChannelConfig``, and answers with the provider's
message id, or raises ``ProviderError`` saying what kind of failure it was. Adapters do no
retrying, waiting or bookkeeping: the sender owns those. They are stateless apart from caches
(for example Chatwoot's contact → conversation mapping, kept in a ``MappingStore``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from shared.events import ButtonsContent, ListContent, MediaContent, TemplateContent, TextContent

Content = TextContent | MediaContent | TemplateContent | ButtonsContent | ListContent


@dataclass(frozen=True)
class ChannelConfig:
    """One WhatsApp number on one provider, with its credentials decrypted for the call.

    ``settings`` holds the provider's non-secret fields; ``credentials`` its secrets:

    - meta: settings ``phone_number_id``, ``api_version`` (e.g. ``v23.0``); credentials ``access_token``
    - chatwoot: settings ``account_id``, ``inbox_id``; credentials ``api_access_token``
    - evolution: settings ``instance``; credentials ``api_key``
    - waha: settings ``session``; credentials ``api_key``
    - sandbox: nothing

    ``base_url`` is never None here: the sender fills in the provider's default
    (``https://graph.facebook.com`` for Meta) when the channel does not set one.
    """

    id: uuid.UUID
    tenant_id: uuid.UUID
    provider: str
    base_url: str
    settings: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outbound:
    """What a provider needs to deliver one message."""

    message_id: uuid.UUID
    tenant_id: uuid.UUID
    to: str  # E.164, with the leading '+'
    content: Content


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    #: set when the provider cannot render the kind faithfully and a documented fallback was sent
    #: (e.g. "quick replies sent as a numbered list"); stored in the message's history
    degraded: str | None = None
    #: what else the provider had to do on the way that an operator should see in the history
    #: (e.g. "cached conversation 12 belongs to another contact now: re-resolved to 31")
    notes: tuple[str, ...] = ()

    @property
    def history_note(self) -> str | None:
        """The line the message's ``sent`` history entry carries (None when nothing happened)."""
        parts = [p for p in (self.degraded, *self.notes) if p]
        return "; ".join(parts) or None


class Failure(StrEnum):
    """What a provider's error means for the message, the recipient and the channel."""

    RETRY = "retry"  # transient: rate limit, 5xx, timeout, connection error → backoff and retry
    RETRY_RECIPIENT = "retry_recipient"  # pair rate limit (131056): retry, slow down this recipient only
    THROTTLED = "throttled"  # the channel's throughput limit (130429): retry, slow the channel down
    PERMANENT = "permanent"  # invalid number, template missing, unsupported kind… → fail now
    OPTED_OUT = "opted_out"  # the recipient opted out of marketing (131050): fail and record the opt-out
    PAUSE_CHANNEL = "pause_channel"  # bad token (190), policy block (368): fail now and pause the channel


class ProviderError(Exception):
    """A provider refused or failed a send.

    ``code`` is the provider's own code as a string (Meta's ``131026``, an HTTP status ``503``,
    ``timeout``, ``connection``, ``unsupported_kind`` …); ``reason`` is readable by an operator.
    """

    def __init__(
        self,
        reason: str,
        *,
        failure: Failure,
        code: str | None = None,
        retry_after: float | None = None,
        http_status: int | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.code = code
        self.retry_after = retry_after
        self.http_status = http_status
        #: the request may have reached the provider (no answer came back: a read timeout, a
        #: connection dropped after the request was written): a resend can arrive twice
        self.ambiguous = ambiguous

    @property
    def retryable(self) -> bool:
        return self.failure in (Failure.RETRY, Failure.RETRY_RECIPIENT, Failure.THROTTLED)


class LookupUnsupported(Exception):
    """The provider cannot say whether it has a message (no client reference): reconcile resends."""


class MappingStore(Protocol):
    """A small durable key → value cache an adapter may use (Chatwoot: phone → contact and
    conversation ids). Keys are namespaced by the adapter; values are JSON-able strings."""

    async def get(self, channel_id: uuid.UUID, key: str) -> str | None: ...

    async def put(self, channel_id: uuid.UUID, key: str, value: str) -> None: ...

    async def delete(self, channel_id: uuid.UUID, key: str) -> None: ...


class MemoryMappingStore:
    """In-process ``MappingStore``: for tests and single-process use."""

    def __init__(self) -> None:
        self._values: dict[tuple[uuid.UUID, str], str] = {}

    async def get(self, channel_id: uuid.UUID, key: str) -> str | None:
        return self._values.get((channel_id, key))

    async def put(self, channel_id: uuid.UUID, key: str, value: str) -> None:
        self._values[(channel_id, key)] = value

    async def delete(self, channel_id: uuid.UUID, key: str) -> None:
        self._values.pop((channel_id, key), None)


class Provider(Protocol):
    """Adapters are built as ``Adapter(http=httpx.AsyncClient, store=MappingStore)`` (the sandbox
    differs: it writes to a table) and are shared by all channels of their provider."""

    name: str

    async def send(self, channel: ChannelConfig, message: Outbound) -> SendResult: ...

    async def lookup(self, channel: ChannelConfig, message: Outbound) -> str | None:
        """The provider's id for a message Herald sent under ``message.message_id``, or None if
        the provider has no record of it. Raises ``LookupUnsupported`` when the provider cannot
        tell (WhatsApp's Cloud API keeps no client reference), which makes reconciliation resend."""
        ...
