"""cancel_and_wait ends a task even when the first cancellation is swallowed (as redis-py can)."""

from __future__ import annotations

import asyncio

from feed.aio import cancel_and_wait


async def test_cancel_and_wait_survives_a_swallowed_cancellation() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue  # like a client library that eats the first cancel
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every_s=0.05), timeout=2)
    assert task.cancelled() and swallowed == 2
