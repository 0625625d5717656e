"""Asyncio helpers shared by the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], every_s: float = 0.1) -> None:
    """Cancel `task` and wait until it has ended.

    redis-py can swallow a cancellation that lands while it is connecting, so the task
    is cancelled again until it is done instead of awaiting it once and hanging.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every_s)
    with contextlib.suppress(asyncio.CancelledError):
        await task
