"""Routing keys of the events routed by the origin of their message (``message.status``)."""

from __future__ import annotations

import pytest

from shared.events import MessageStatusChanged, OrderStatusChanged
from shared.topology import Subscription, routing_key, subscription


def test_message_status_carries_its_origin_as_the_last_word():
    assert routing_key(MessageStatusChanged, "scheduler") == "message.status.v1.scheduler"
    assert routing_key(MessageStatusChanged, "a.b*#") == "message.status.v1.a_b__"
    assert routing_key(MessageStatusChanged, None) == "message.status.v1"  # unknown: everyone's
    assert routing_key(OrderStatusChanged, "api") == "order.status_changed.v1"


def test_the_scheduler_binds_its_own_origin_and_others_bind_every_origin():
    sched = subscription("scheduler", MessageStatusChanged)
    assert sched.queue.routing_key == "message.status.v1.scheduler"
    assert sched.extra_bindings == ("message.status.v1",)
    everyone = Subscription("audit", MessageStatusChanged)
    assert everyone.queue.routing_key == "message.status.v1.#"
    assert everyone.extra_bindings == ()
    with pytest.raises(ValueError, match="not routed by origin"):
        Subscription("pipeline", OrderStatusChanged, origin="api")
