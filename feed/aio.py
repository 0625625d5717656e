"""Asyncio helpers shared by the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
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


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run `work` as a background task for the duration of the context, then cancel it."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        await cancel_and_wait(task)
