"""A whole engine on this machine for an evaluation run: its own Redis-compatible server, the
API, an ingest worker and an event consumer as processes, in a temporary data folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from feed.redis_server import free_port, start_server
from feed.stores.backlog import settled
from feed.stores.connection import connect_sync


class LocalEngine:
    """Context manager: starts everything with `env` overrides, stops everything on exit and
    deletes its folder (kept, with the processes' logs, when starting or the run failed)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="feed-eval-"))
        self._env = env
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self.url = ""
        self.redis_url = ""
        self._process_env: dict[str, str] = {}

    def __enter__(self) -> LocalEngine:
        redis_port, api_port = free_port(), free_port()
        self._procs.append(start_server(redis_port, self.folder / "redis", appendonly=False))
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATA_DIR": str(self.folder),
            "API_PORT": str(api_port),
            "LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # a replay sends each user's history within seconds: it is not traffic to limit
            "WRITE_LIMIT_PER_KEY": "0",
            "WRITE_LIMIT_PER_USER": "0",
            **self._env,
        }
        self._process_env = env
        bin_dir = Path(sys.executable).parent
        for name in ("feed-api", "feed-worker", "feed-consumer"):
            log = (self.folder / f"{name}.log").open("w")
            self._logs.append(log)
            self._procs.append(
                subprocess.Popen([str(bin_dir / name)], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        self.url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 300
        while not self._ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                self.__exit__(RuntimeError, None, None)
                raise RuntimeError(f"the engine did not start; logs in {self.folder}")
            time.sleep(0.2)
        return self

    def restart_api(self, env: dict[str, str]) -> None:
        """Replace the API process by one with `env` added (its caches start empty; it loads the
        deployed models at start); returns once it answers."""
        api = self._procs[1]
        api.terminate()
        api.wait(timeout=30)
        log = (self.folder / "feed-api.log").open("a")
        self._logs.append(log)
        bin_dir = Path(sys.executable).parent
        self._procs[1] = subprocess.Popen(
            [str(bin_dir / "feed-api")],
            env={**self._process_env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while not self._ready():
            if time.monotonic() > deadline or self._procs[1].poll() is not None:
                raise RuntimeError(f"the API did not restart; logs in {self.folder}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            httpx.get(f"{self.url}/health", timeout=1.0).raise_for_status()
        except httpx.HTTPError:
            return False
        return " ready." in (self.folder / "feed-worker.log").read_text()

    def retrain(self) -> dict[str, Any]:
        """Retrain the batch models now, as an operator would (`python -m feed.batch.retrain`);
        returns what it printed: each model's result, the ranker's training report among them."""
        done = subprocess.run(
            [sys.executable, "-m", "feed.batch.retrain"],
            env={**self._process_env},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"retrain failed ({done.returncode}): {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def idle(self, events: int) -> bool:
        """Every one of `events` applied (or dropped) and the vector index caught up."""
        r = connect_sync(self.redis_url)
        try:
            return settled(r, events)
        finally:
            r.close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self._logs:
            log.close()
        if exc_type is None:
            shutil.rmtree(self.folder, ignore_errors=True)
