"""GET /health."""

from __future__ import annotations

from litestar import get

from feed.api.schemas import Health


@get("/health", tags=["health"])
async def health() -> Health:
    """Liveness: the API process is up."""
    return Health(status="ok")
