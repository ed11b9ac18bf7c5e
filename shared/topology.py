"""RabbitMQ topology, declared once and imported by every service.

- ``herald.events``: durable topic exchange; routing key = versioned event type, plus, for the
  events in ``BY_ORIGIN`` (``message.status``), one more word: the origin of the message it is
  about (``message.status.v1.scheduler``). A subscription to such an event names the origin it
  wants, or binds ``<type>.#`` and gets every origin: a service is not handed statuses of
  messages it never asked for (the scheduler handled every API message's three statuses).
- ``herald.unrouted``: alternate exchange of ``herald.events``. An event no queue is bound for yet
  (a fact nobody consumes today) lands in ``herald.unrouted`` instead of being dropped or bounced:
  an operator can see it, and the outbox relay is never stuck on a message the broker returns.
  Statuses of API-sent messages are the exception: see ``API_STATUS_DISCARD``.
- ``herald.dlx``: dead-letter exchange. A message a consumer rejects (it cannot be parsed or it
  failed past its delivery limit) is routed there with its queue name as routing key and kept in
  ``<service>.dead-letters``.
- Work queues ``<service>.<event>``: quorum queues with a delivery limit (poison messages stop
  looping), except ``sender.message.requested``, a classic queue with priorities 1–10 (quorum
  queues gain priorities only in RabbitMQ 4).

Changing a queue's arguments needs a new queue name: RabbitMQ refuses a redeclare with other
arguments (PRECONDITION_FAILED).
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from shared.events import (
    ChannelSessionChanged,
    ContactOptedIn,
    ContactOptedOut,
    DeliveryStatus,
    DraftReady,
    EventCancelled,
    EventChanged,
    EventData,
    EventPublished,
    InboundReceived,
    MessageRequested,
    MessageStatusChanged,
    OrderStatusChanged,
    PacingDue,
    TemplateStatusChanged,
    TenantEvent,
    UserErased,
)

EVENTS_EXCHANGE_NAME = "herald.events"
UNROUTED_EXCHANGE_NAME = "herald.unrouted"
DLX_NAME = "herald.dlx"
DELIVERY_LIMIT = 10
MAX_PRIORITY = 10

EVENTS = RabbitExchange(
    EVENTS_EXCHANGE_NAME,
    type=ExchangeType.TOPIC,
    durable=True,
    arguments={"alternate-exchange": UNROUTED_EXCHANGE_NAME},
)
UNROUTED = RabbitExchange(UNROUTED_EXCHANGE_NAME, type=ExchangeType.FANOUT, durable=True)
DLX = RabbitExchange(DLX_NAME, type=ExchangeType.TOPIC, durable=True)

UNROUTED_QUEUE = RabbitQueue(
    "herald.unrouted",
    queue_type=QueueType.QUORUM,
    durable=True,
    arguments={"x-max-length": 100_000, "x-message-ttl": 7 * 24 * 3600 * 1000},
)


#: events published with the origin of their message as the routing key's last word
BY_ORIGIN: frozenset[type[EventData]] = frozenset({MessageStatusChanged})

#: the origin of messages sent through the sender's HTTP API (and the console, which calls it)
API_ORIGIN = "api"

#: Statuses of the messages sent through the HTTP API: the caller reads them there
#: (``GET /v1/messages``, the console). Three per message, unbound, they would fill
#: ``herald.unrouted`` (100,000 in under a minute at load) and hide the events it is there to
#: show, and cost the broker a quorum-queue write each. So they are bound to this queue, which
#: keeps none (``x-max-length`` 0: a message routed to it is dropped at once). A system that wants
#: them on the broker binds its own queue to ``message.status.v1.api`` (or ``message.status.v1.#``)
#: and gets every one.
API_STATUS_DISCARD = RabbitQueue(
    "herald.api-statuses.discard",
    queue_type=QueueType.CLASSIC,
    durable=True,
    arguments={"x-max-length": 0},
)


def origin_word(origin: str | None) -> str:
    """``origin`` as one routing-key word: a dot would split it, ``*``/``#`` are wildcards."""
    word = (origin or "").translate(str.maketrans(".*#", "___"))
    return word or "unknown"


def routing_key(event: type[EventData], origin: str | None = None) -> str:
    """The routing key ``event`` is published with (``origin``: the message's, for BY_ORIGIN).
    Without an origin it is the bare type, which every subscription of the type binds: an event
    whose origin is unknown reaches every consumer rather than none."""
    if event in BY_ORIGIN and origin is not None:
        return f"{event.type_name()}.{origin_word(origin)}"
    return event.type_name()


@dataclass(frozen=True)
class Subscription:
    """One service's durable interest in one event type (of one origin, when ``origin`` is set;
    only for the events in BY_ORIGIN)."""

    service: str
    event: type[EventData]
    priority: bool = False
    origin: str | None = None

    def __post_init__(self) -> None:
        if self.origin is not None and self.event not in BY_ORIGIN:
            raise ValueError(f"{self.event.type_name()} is not routed by origin")

    @property
    def queue_name(self) -> str:
        return f"{self.service}.{self.event.event_type}"

    @property
    def routing_key(self) -> str:
        """The queue's binding: the type; for BY_ORIGIN, one origin or every one (``#``, which
        also matches the bare type an older publisher used)."""
        if self.event not in BY_ORIGIN:
            return self.event.type_name()
        if self.origin is None:
            return f"{self.event.type_name()}.#"
        return routing_key(self.event, self.origin)

    @property
    def extra_bindings(self) -> tuple[str, ...]:
        """Bindings besides ``routing_key``, declared by ``declare_shared``. A one-origin
        subscription also takes the bare type: an event of unknown origin, and what publishers
        before the origin word wrote (rows still in an outbox while a deployment upgrades)."""
        if self.event in BY_ORIGIN and self.origin is not None:
            return (self.event.type_name(),)
        return ()

    @property
    def queue(self) -> RabbitQueue:
        dead_letter = {
            "x-dead-letter-exchange": DLX_NAME,
            "x-dead-letter-routing-key": self.queue_name,
        }
        if self.priority:
            return RabbitQueue(
                self.queue_name,
                queue_type=QueueType.CLASSIC,
                durable=True,
                routing_key=self.routing_key,
                arguments={**dead_letter, "x-max-priority": MAX_PRIORITY},
            )
        return RabbitQueue(
            self.queue_name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=self.routing_key,
            arguments={**dead_letter, "x-delivery-limit": DELIVERY_LIMIT},
        )


def dead_letter_queue(service: str) -> RabbitQueue:
    return RabbitQueue(
        f"{service}.dead-letters",
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=f"{service}.#",
    )


#: who consumes what. Adding a line here (and a subscriber) is how a service starts listening.
SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("sender", MessageRequested, priority=True),
    Subscription("pipeline", OrderStatusChanged),
    Subscription("pipeline", PacingDue),
    Subscription("pipeline", InboundReceived),
    Subscription("pipeline", UserErased),
    Subscription("pipeline", MessageStatusChanged, origin="pipeline"),
    Subscription("pipeline", TenantEvent),
    Subscription("sender", DeliveryStatus),
    Subscription("sender", InboundReceived),
    Subscription("sender", ContactOptedOut),
    Subscription("sender", ContactOptedIn),
    Subscription("sender", TemplateStatusChanged),
    Subscription("sender", ChannelSessionChanged),
    Subscription("scheduler", EventPublished),
    Subscription("scheduler", EventChanged),
    Subscription("scheduler", EventCancelled),
    Subscription("scheduler", MessageStatusChanged, origin="scheduler"),
)

# Event types that are part of the contract but have no consumer in this release; listed so that
# the AsyncAPI documents and the tests know them.
UNCONSUMED = (DraftReady,)


async def declare_shared(broker: RabbitBroker, service: str) -> None:
    """Declare what subscribers do not declare themselves: the events exchange with its alternate
    exchange and unrouted queue, and the dead-letter exchange with this service's dead-letter queue.
    Idempotent: every process runs it at connect."""
    await broker.declare_exchange(EVENTS)
    await broker.declare_exchange(UNROUTED)
    unrouted = await broker.declare_queue(UNROUTED_QUEUE)
    await unrouted.bind(UNROUTED_EXCHANGE_NAME)
    discard = await broker.declare_queue(API_STATUS_DISCARD)
    await discard.bind(EVENTS_EXCHANGE_NAME, routing_key=routing_key(MessageStatusChanged, API_ORIGIN))
    await broker.declare_exchange(DLX)
    dlq = await broker.declare_queue(dead_letter_queue(service))
    await dlq.bind(DLX_NAME, routing_key=f"{service}.#")
    for sub in SUBSCRIPTIONS:
        if sub.service == service and sub.extra_bindings:
            queue = await broker.declare_queue(sub.queue)
            for key in sub.extra_bindings:
                await queue.bind(EVENTS_EXCHANGE_NAME, routing_key=key)


def subscription(service: str, event: type[EventData]) -> Subscription:
    for sub in SUBSCRIPTIONS:
        if sub.service == service and sub.event is event:
            return sub
    raise KeyError(f"{service} has no subscription to {event.type_name()} in shared.topology")
