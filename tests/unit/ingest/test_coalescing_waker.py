"""The ingest relay's waker: a lone commit wakes the relay at once; a burst is taken in batches."""

from __future__ import annotations

import asyncio

from services.ingest.webhooks import CoalescingWaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_idle_waker_wakes_the_relay_at_once() -> None:
    wakes: list[float] = []
    clock = Clock()
    waker = CoalescingWaker(lambda: wakes.append(clock.now), delay=10.0, clock=clock)
    waker()
    assert wakes == [100.0]  # no call_later: nothing to wait for
    clock.now += 10.0
    waker()  # quiet for a whole window again: at once again
    assert wakes == [100.0, 110.0]


async def test_a_burst_wakes_once_now_and_once_at_the_end_of_the_window() -> None:
    wakes: list[float] = []
    woke_twice = asyncio.Event()

    def wake() -> None:
        wakes.append(asyncio.get_running_loop().time())
        if len(wakes) == 2:
            woke_twice.set()

    waker = CoalescingWaker(wake, delay=0.05)
    start = asyncio.get_running_loop().time()
    for _ in range(50):  # fifty commits within the window
        waker()
    assert len(wakes) == 1 and wakes[0] - start < 0.05
    await asyncio.wait_for(woke_twice.wait(), timeout=10)
    assert wakes[1] - wakes[0] >= 0.05 * 0.9  # the rest of the burst, together, a window later
    waker()  # within the window of the second wake: waits again rather than waking at once
    assert len(wakes) == 2
