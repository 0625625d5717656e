"""GET /health."""

from __future__ import annotations

import os

from litestar import get

from feed.api.schemas import Health
from feed.services import ServicesDep


@get("/health", tags=["health"])
async def health(services: ServicesDep) -> Health:
    """Liveness: the API process is up (and serving with its services open)."""
    return Health(status="ok", replica=services.replica, pid=os.getpid())
