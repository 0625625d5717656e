"""A closed-loop HTTP load generator: `concurrency` workers, each sending its next request as
soon as the previous one is answered, for `duration_s`, on loopback only.

Written as a small aiohttp client rather than with locust: the server and the load
share two cores here, and a plain asyncio loop on aiohttp spends less CPU per request
than locust's gevent users, so more of the machine measures the engine; latencies are
kept per request, so percentiles are exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp
import msgspec
import numpy as np

_encode = msgspec.json.Encoder().encode


@dataclass
class LoadResult:
    """Latencies (ms) of answered requests, the count of unexpected answers, and the wall time."""

    name: str
    latencies_ms: np.ndarray
    errors: int
    seconds: float

    def summary(self) -> dict[str, float]:
        """requests/s and latency percentiles."""
        lat = self.latencies_ms if len(self.latencies_ms) else np.zeros(1)
        return {
            "requests": float(len(self.latencies_ms)),
            "errors": float(self.errors),
            "req_per_s": len(self.latencies_ms) / self.seconds,
            "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
        }


async def closed_loop(
    name: str,
    url: str,
    body: Callable[[int], dict[str, Any]],
    concurrency: int,
    duration_s: float,
    expect: int,
    on_answer: Callable[[dict[str, Any]], None] | None = None,
    requests: int | None = None,
) -> LoadResult:
    """POST `body(i)` to `url` from `concurrency` workers for `duration_s` seconds, or until
    `requests` requests were sent if that comes first."""
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator only targets loopback, not {host}")
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests if requests is not None else 10**12))
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + duration_s

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                i = next(counter, None)
                if i is None:
                    return
                payload = _encode(body(i))
                start = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    raw = await response.read()
                    if response.status != expect:
                        errors += 1
                        continue
                latencies.append((time.perf_counter() - start) * 1000)
                if on_answer is not None:
                    on_answer(msgspec.json.decode(raw))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return LoadResult(name, np.array(latencies), errors, seconds)
