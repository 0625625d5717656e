"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np


async def wait_for(predicate: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Await `predicate()` (sync or async) until truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


def unit(*values: float, dim: int = 384) -> np.ndarray:
    """A unit float32 vector whose first components are `values`."""
    v = np.zeros(dim, dtype=np.float32)
    v[: len(values)] = values
    return (v / np.linalg.norm(v)).astype(np.float32)
