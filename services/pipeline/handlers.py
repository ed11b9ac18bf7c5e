"""Pipeline use cases."""

from __future__ import annotations

from prometheus_client import Counter

from services.pipeline.domain import DEFAULT_ORDER_RULE, message_id_for
from shared.events import CloudEvent, MessageRequested, OrderStatusChanged, new_event
from shared.service import ServiceRuntime

SOURCE = "/herald/pipeline"
CONSUMER = "order-status-notifier"
NOTIFICATIONS = Counter("herald_pipeline_notifications_total", "Messages requested by rules", ["rule"])


async def notify_order_status(runtime: ServiceRuntime, event: CloudEvent[OrderStatusChanged]) -> bool:
    """Turn an order's status change into a WhatsApp message request, once per event.

    The processed-event record and the outbox row commit together, so a redelivered event
    (at-least-once broker) neither sends twice nor is lost. Returns False for a duplicate.
    """
    rule = DEFAULT_ORDER_RULE

    async def apply() -> bool:
        async with runtime.uow() as uow:
            if not await uow.mark_processed(CONSUMER, f"{event.source}:{event.id}"):
                return False
            request = MessageRequested(
                message_id=message_id_for(event.tenantid, f"{event.source}:{event.id}", rule),
                to=event.data.customer_phone,
                text=rule.render(event.data),
                priority=rule.priority,
                origin="pipeline",
                correlation_id=f"order:{event.data.order_id}",
            )
            uow.add_event(
                new_event(
                    request, tenant_id=event.tenantid, source=SOURCE, subject=f"order/{event.data.order_id}"
                ),
                priority=rule.priority,
            )
            await uow.commit()
            return True

    applied = await runtime.with_db("notify order status", apply)
    if applied:
        NOTIFICATIONS.labels(rule.name).inc()
    return applied
