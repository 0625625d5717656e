"""The evaluation's stand-in host backend: serves a data set's follow graph to the engine's
social-graph callback, `GET /internal/social-graph/{user_id}/` -> `{"following": [ids], "blocked": []}`,
from a thread of the evaluation's own process on a free loopback port."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

_PATH = re.compile(r"^/internal/social-graph/([^/]+)/$")


class GraphHost:
    """Context manager: serves `following` (user -> the users they follow) at `url` while open
    (in the same id space as the engine's `user_id` and `author_id`);
    an unknown user follows no one, any other path is a 404."""

    def __init__(self, following: Mapping[int, set[int]]) -> None:
        self._graph = {str(u): sorted(f) for u, f in following.items()}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        graph = self._graph

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
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
