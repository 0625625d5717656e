"""The evaluation's stand-in host backend: serves a data set's follow graph to the engine's
social-graph callback, `GET /internal/social-graph/{user_id}/` -> `{"following": [ids], "blocked": []}`,
from a process of its own on a free loopback port: the evaluation's process is busy asking for
feeds, and a host that answers late (the engine waits 0.3 s) would take users' graphs out of
their feeds at random."""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import httpx

from feed.redis_server import free_port

_PATH = re.compile(r"^/internal/social-graph/([^/]+)/$")


class GraphHost:
    """Context manager: serves `following` (user -> the users they follow) at `url` while open
    (in the same id space as the engine's `user_id` and `author_id`);
    an unknown user follows no one, any other path is a 404."""

    def __init__(self, following: Mapping[int, set[int]]) -> None:
        self._graph = {str(u): sorted(f) for u, f in following.items()}
        self._process: BaseProcess | None = None
        self.url = ""

    @staticmethod
    def _serve(graph: dict[str, list[int]], port: int) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", port), GraphHost._handler(graph))
        server.daemon_threads = True
        server.serve_forever()

    @staticmethod
    def _handler(graph: dict[str, list[int]]) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                match = _PATH.match(self.path)
                if match is None:
                    self.send_error(404)
                    return
                following = graph.get(unquote(match[1]), [])
                body = json.dumps({"following": following, "blocked": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: one line per feed request would drown the evaluation's output."""

        return Handler

    def __enter__(self) -> GraphHost:
        port = free_port()
        process = multiprocessing.get_context("fork").Process(
            target=self._serve, args=(self._graph, port), daemon=True
        )
        process.start()
        self._process = process
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/", timeout=1.0)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline or not process.is_alive():
                    self.__exit__(None, None, None)
                    raise RuntimeError("the stand-in host did not start") from None
                time.sleep(0.05)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=10)
