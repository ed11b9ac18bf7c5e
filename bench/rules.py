"""Benchmark of notification-rule evaluation: cost per event (µs) with 100 rules per tenant,
beside a 1-rule baseline. In-process, pure: what the pipeline does per event once the tenant's
rule rows are read (rows → rules, the built-in defaults not replaced, every rule's filter, the
matching rules' texts rendered in the Jinja2 sandbox).

Run::

    scripts/uv run --frozen python -m bench.rules --events 20000

Each rule has a two-condition filter (``status`` in a list, ``customer_tier`` equals) and a
per-language text (pt_BR, en); in the 100-rule case one rule matches each event and 99 are
filtered (the worst realistic case: every filter is tried). ``--matching`` makes more of them
match (each renders). The SQL read of the rows (one query per event) is not included: see
``bench/first_slice.py`` for the whole path. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from types import SimpleNamespace
from typing import Any

from services.pipeline.rules import rule_from_row
from services.pipeline.rules_domain import builtins, effective, evaluate
from shared.events import OrderStatusChanged

STATUSES = ["payment_confirmed", "preparing", "ready", "out_for_delivery", "delivered", "cancelled"]


def rows(n: int, matching: int) -> list[Any]:
    """``n`` rule rows as the repository returns them; ``matching`` of them match the event."""
    out = []
    for i in range(n):
        tier = "gold" if i < matching else f"tier-{i}"
        out.append(
            SimpleNamespace(
                id=uuid.uuid4(),
                name=f"rule-{i:03d}",
                event_type="order.status_changed",
                filter=[
                    {"field": "status", "op": "in", "value": [*STATUSES[: 1 + i % len(STATUSES)], "ready"]},
                    {"field": "customer_tier", "op": "equals", "value": tier},
                ],
                recipient="customer_phone",
                language_field=None,
                messages={
                    "pt_BR": {
                        "text": f"Olá {{{{ customer_name }}}}! Pedido {{{{ order_id }}}} ({i}): {{{{ status | humanize }}}}"
                    },
                    "en": {
                        "text": f"Hi {{{{ customer_name }}}}! Order {{{{ order_id }}}} ({i}) is {{{{ status | humanize }}}}"
                    },
                },
                fallback_language="en",
                priority=8,
                channel_id=None,
                enabled=True,
                updated_at=0,
            )
        )
    return out


def measure(n: int, matching: int, events: int) -> tuple[float, float, int]:
    """µs per event: median of 5 runs, and p99 of single events; messages made per event."""
    table = rows(n, matching)
    defaults = builtins()
    data = OrderStatusChanged(
        order_id="1042",
        status="ready",
        customer_phone="+5511999998888",
        customer_name="Ana",
        language="pt_BR",
    ).model_dump(mode="json")
    data["customer_tier"] = "gold"
    meta = {"id": "e", "type": "order.status_changed", "source": "/bench"}

    def one() -> int:
        rules = effective([rule_from_row(r) for r in table], defaults)
        return sum(v.outcome == "sent" for v in evaluate(rules, "order.status_changed.v1", data, meta))

    made = one()  # warm: texts compiled once per distinct text (lru cache)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(events // 5):
            one()
        runs.append((time.perf_counter() - start) / (events // 5) * 1e6)
    singles = []
    for _ in range(min(events, 2000)):
        start = time.perf_counter_ns()
        one()
        singles.append((time.perf_counter_ns() - start) / 1000)
    singles.sort()
    return statistics.median(runs), singles[int(len(singles) * 0.99) - 1], made


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--matching", type=int, default=1, help="rules of the --rules that match each event")
    args = parser.parse_args()
    print(f"rule evaluation per event ({args.events} events, in-process, SQL read excluded)")
    for n, m in ((1, 1), (args.rules, min(args.matching, args.rules))):
        median, p99, made = measure(n, m, args.events)
        print(
            f"  {n:>4} rule(s), {m} matching: {median:8.1f} µs/event (p99 {p99:8.1f} µs), {made} message(s)/event"
        )


if __name__ == "__main__":
    main()
