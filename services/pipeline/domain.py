"""Pure decisions: which words a domain event becomes; when a conversation context expires."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.events import OrderStatusChanged

#: namespace of message ids derived from events: one event, one message id, one message
MESSAGE_ID_NAMESPACE = uuid.UUID("5f1e3c1a-3b8e-4a53-9a36-6b0f1e0a4d11")


@dataclass(frozen=True)
class NotificationRule:
    name: str
    event_type: str
    text: str
    priority: int

    def render(self, event: OrderStatusChanged) -> str:
        return self.text.format(
            order_id=event.order_id, status=humanize(event.status), customer_name=event.customer_name or ""
        )


#: the sentence Herald always sent for an order status; the built-in rules (``rules_domain.py``,
#: ``BUILTIN_RULES``) say it in English, and a tenant's rules of ``/v1/rules`` replace them
DEFAULT_ORDER_RULE = NotificationRule(
    name="default-order-status",
    event_type=OrderStatusChanged.type_name(),
    text="Your order {order_id} is {status}",
    # order updates are transactional: they overtake marketing sends
    priority=8,
)


def humanize(status: str) -> str:
    """``ready_for_pickup`` → ``ready for pickup``: order systems use codes, customers read words."""
    return status.replace("_", " ").replace("-", " ").strip()


def message_id_for(tenant_id: uuid.UUID, event_id: str, rule: NotificationRule) -> uuid.UUID:
    return uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{tenant_id}:{event_id}:{rule.name}")


# --- conversation context ----------------------------------------------------------------------

#: how long an open clarification waits for its answer; after that the next message starts over
CONTEXT_TTL = timedelta(minutes=30)
#: how many times one question is put: the first time and once more after an unmatched answer
MAX_ASKS = 2


def context_expires_at(now: datetime) -> datetime:
    return now + CONTEXT_TTL


def is_expired(expires_at: datetime, now: datetime) -> bool:
    """An expired context is ignored: the message that finds it is classified afresh."""
    return expires_at <= now


def may_ask_again(attempts: int) -> bool:
    """An unmatched answer gets the question once more; after that the context is dropped."""
    return attempts < MAX_ASKS
