"""Which vector index a process opens."""

from __future__ import annotations

from feed.config import Settings
from feed.stores.index.builds import live_folder
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.server import ServerVectorIndex
from feed.stores.index.vectors import VectorIndex, space_dims


def open_vector_index(settings: Settings) -> VectorIndex:
    """The server index when `QDRANT_URL` is set, else the host's embedded shard under the data
    dir (which only the index owner opens while the engine runs)."""
    if settings.qdrant_url:
        return ServerVectorIndex(
            settings.qdrant_url, settings.qdrant_collection, space_dims(settings), settings.qdrant_api_key
        )
    return EdgeVectorIndex(live_folder(settings.qdrant_path()), space_dims(settings))
