"""A stand-in host backend for benchmarks: serves a follow graph from a JSON file.

`python -m bench.host GRAPH.json PORT` answers `GET /internal/social-graph/{user_id}/`
like a host application would (an unknown user follows no one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
from litestar import Litestar, get


def create_app(graph: dict[str, Any]) -> Litestar:
    """The host app over an in-memory graph."""

    @get("/internal/social-graph/{user_id:str}/")
    async def social_graph(user_id: str) -> dict[str, Any]:
        return graph.get(user_id, {"following": [], "blocked": []})  # type: ignore[no-any-return]

    return Litestar(route_handlers=[social_graph])


def main() -> None:
    """Serve GRAPH.json on 127.0.0.1:PORT."""
    graph = json.loads(Path(sys.argv[1]).read_text())
    uvicorn.run(create_app(graph), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")


if __name__ == "__main__":
    main()
