"""Asyncio helpers shared by the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from feed.logging import log_failure


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


async def forever(
    step: Callable[[], Awaitable[object]],
    logger: Any,
    failed: str,
    every_s: float = 0.0,
    retry_s: float = 1.0,
    recover: Callable[[Exception], Awaitable[object]] | None = None,
) -> None:
    """Run `step` again and again until cancelled: `every_s` after a success, `retry_s` after a
    failure, which `logger` logs as `failed` (with its traceback, or one line when Redis or the
    host is unreachable) and then handed to `recover` when given. The background loops of
    the long-running processes are this: none stops on an error."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(logger, failed, exc)
            await asyncio.sleep(retry_s)
            if recover is not None:
                await recover(exc)
            continue
        if every_s > 0:
            await asyncio.sleep(every_s)
