"""The one interface every WhatsApp provider adapter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.sender.domain import OutboundMessage


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str


class ProviderError(Exception):
    """A provider refused or failed a send. ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, code: str | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class Provider(Protocol):
    name: str

    async def send(self, message: OutboundMessage) -> SendResult: ...

    async def lookup(self, message_id: str) -> str | None:
        """The provider's id for a message Herald sent under ``message_id``, or None if the
        provider has no record of it. Raises ``LookupUnsupported`` when the provider cannot tell
        (WhatsApp's Cloud API keeps no client reference), which makes reconciliation resend."""
        ...


class LookupUnsupported(Exception):
    pass
