"""HTTP load generators on loopback only.

Closed loop (`closed_loop`): `concurrency` workers, each sending its next request as soon as
the previous one is answered: the most the server does per second, but its latency is only
`concurrency` over that throughput, and a stall delays the requests behind it unseen.

Open loop (`open_loop`): requests go out at a constant rate whatever the answers, each timed
from when it was scheduled to go, so a stall shows in every request that should have been
sent meanwhile (no coordinated omission): the latency a user sees at that load.

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
            "p999_ms": float(np.percentile(lat, 99.9)),
            "max_ms": float(lat.max()),
        }


def _loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator only targets loopback, not {host}")


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
    _loopback(url)
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


@dataclass
class OpenLoopResult:
    """An open-loop run: one `LoadResult` per kind of request (its latencies from each request's
    scheduled send time), and how far behind its schedule the sender itself fell at worst (a
    large lag means the load generator, not the server, could not keep the rate)."""

    rate: float
    kinds: dict[str, LoadResult]
    max_send_lag_ms: float


async def open_loop(
    url: str,
    request: Callable[[int], tuple[str, dict[str, Any]]],
    rate: float,
    duration_s: float,
    expect: int,
    timeout_s: float = 30.0,
) -> OpenLoopResult:
    """POST `rate` requests per second to `url` for `duration_s`, request i at start + i / rate
    whatever is still unanswered; `request(i)` gives its kind (the results are kept per kind)
    and its body. A request answered otherwise than `expect`, or not within `timeout_s`, is an
    error of its kind."""
    _loopback(url)
    headers = {"content-type": "application/json"}
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # no connection limit: a request waiting for a pooled connection would be held back by the
    # client, which is what an open loop must not do
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def send(kind: str, payload: bytes, scheduled: float) -> None:
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    ok = response.status == expect
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies[kind].append((time.perf_counter() - scheduled) * 1000)
            else:
                errors[kind] += 1

        pending: list[asyncio.Task[None]] = []
        lag = 0.0
        start = time.perf_counter()
        for i in range(int(rate * duration_s)):
            kind, body = request(i)
            latencies.setdefault(kind, [])
            errors.setdefault(kind, 0)
            payload = _encode(body)
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lag = max(lag, time.perf_counter() - scheduled)
            pending.append(asyncio.create_task(send(kind, payload, scheduled)))
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - start
    kinds = {
        kind: LoadResult(kind, np.array(values), errors[kind], seconds) for kind, values in latencies.items()
    }
    return OpenLoopResult(rate, kinds, lag * 1000)
