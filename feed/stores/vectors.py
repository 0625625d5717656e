"""The post vector index: Qdrant, embedded (Qdrant Edge shard) or a server by URL.

Both implementations store one point per post, id `point_id(post key)`, named
vector `text`, payload from `PostRecord.payload()`, and answer the same queries,
so the pipeline does not know which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from feed.config import Settings
from feed.ids import point_id
from feed.stores.records import PostRecord

TEXT_VECTOR = "text"
TEXT_DIM = 384


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A nearest-neighbour answer: the post key and its cosine similarity."""

    post_key: str
    score: float


class VectorIndex(Protocol):
    """Narrow interface over the post vector store."""

    async def upsert(self, records: list[PostRecord]) -> None:
        """Insert or replace the points of these posts."""

    async def delete(self, post_keys: list[str]) -> None:
        """Remove these posts' points; unknown keys are ignored."""

    async def nearest(self, vector: np.ndarray, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        """Posts nearest to `vector` by cosine, skipping posts by `exclude_authors`."""

    async def count(self) -> int:
        """Number of points stored."""

    async def close(self) -> None:
        """Release the store (flushes the embedded shard)."""


class EdgeVectorIndex:
    """Embedded Qdrant Edge shard in a folder; only one process may open it at a time."""

    def __init__(self, path: Path) -> None:
        import qdrant_edge as qe

        self._qe = qe
        config = qe.EdgeConfig(
            vectors={TEXT_VECTOR: qe.EdgeVectorParams(size=TEXT_DIM, distance=qe.Distance.Cosine)}
        )
        if (path / "edge_config.json").exists():
            self._shard = qe.EdgeShard.load(str(path), config)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._shard = qe.EdgeShard.create(str(path), config)
            self._shard.update(qe.UpdateOperation.create_field_index("author", qe.PayloadSchemaType.Keyword))
            self._shard.update(
                qe.UpdateOperation.create_field_index("created_at", qe.PayloadSchemaType.Float)
            )

    async def upsert(self, records: list[PostRecord]) -> None:
        qe = self._qe
        points = [
            qe.Point(
                id=point_id(r.key),
                vector={TEXT_VECTOR: r.vector.astype(float).tolist()},
                payload=r.payload(),
            )
            for r in records
        ]
        if points:
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    async def delete(self, post_keys: list[str]) -> None:
        if post_keys:
            ids: list[int | str] = [point_id(k) for k in post_keys]
            self._shard.update(self._qe.UpdateOperation.delete_points(ids))  # type: ignore[arg-type]

    async def nearest(self, vector: np.ndarray, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        qe = self._qe
        flt = None
        if exclude_authors:
            flt = qe.Filter(
                must_not=[qe.FieldCondition(key="author", match=qe.MatchAny(any=exclude_authors))]
            )
        hits = self._shard.query(
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(vector.astype(float).tolist(), using=TEXT_VECTOR),
                with_payload=["post"],
                filter=flt,
            )
        )
        return [VectorHit(str((h.payload or {})["post"]), float(h.score)) for h in hits]

    async def count(self) -> int:
        return int(self._shard.info().points_count)

    async def close(self) -> None:
        self._shard.flush()
        self._shard.close()


class ServerVectorIndex:
    """A Qdrant server (or cluster) by URL, through qdrant-client's async API.

    `url=":memory:"` runs qdrant-client's in-process mode (tests use it).
    """

    def __init__(self, url: str, collection: str, api_key: str | None = None) -> None:
        from qdrant_client import AsyncQdrantClient

        self._client = AsyncQdrantClient(location=url, api_key=api_key)
        self._collection = collection
        self._ready = False

    async def _ensure_collection(self) -> None:
        if self._ready:
            return
        from qdrant_client import models

        if not await self._client.collection_exists(self._collection):
            await self._client.create_collection(
                self._collection,
                vectors_config={
                    TEXT_VECTOR: models.VectorParams(size=TEXT_DIM, distance=models.Distance.COSINE)
                },
            )
            await self._client.create_payload_index(
                self._collection, "author", models.PayloadSchemaType.KEYWORD
            )
            await self._client.create_payload_index(
                self._collection, "created_at", models.PayloadSchemaType.FLOAT
            )
        self._ready = True

    async def upsert(self, records: list[PostRecord]) -> None:
        from qdrant_client import models

        await self._ensure_collection()
        if records:
            await self._client.upsert(
                self._collection,
                points=[
                    models.PointStruct(
                        id=point_id(r.key),
                        vector={TEXT_VECTOR: r.vector.astype(float).tolist()},
                        payload=r.payload(),
                    )
                    for r in records
                ],
            )

    async def delete(self, post_keys: list[str]) -> None:
        from qdrant_client import models

        await self._ensure_collection()
        if post_keys:
            await self._client.delete(
                self._collection,
                points_selector=models.PointIdsList(points=[point_id(k) for k in post_keys]),
            )

    async def nearest(self, vector: np.ndarray, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        from qdrant_client import models

        await self._ensure_collection()
        flt = None
        if exclude_authors:
            flt = models.Filter(
                must_not=[models.FieldCondition(key="author", match=models.MatchAny(any=exclude_authors))]
            )
        result = await self._client.query_points(
            self._collection,
            query=vector.astype(float).tolist(),
            using=TEXT_VECTOR,
            limit=limit,
            query_filter=flt,
            with_payload=["post"],
        )
        return [VectorHit(str((p.payload or {})["post"]), float(p.score)) for p in result.points]

    async def count(self) -> int:
        await self._ensure_collection()
        return (await self._client.count(self._collection)).count

    async def close(self) -> None:
        await self._client.close()


def open_vector_index(settings: Settings) -> VectorIndex:
    """The server index when `QDRANT_URL` is set, else the embedded shard under the data dir."""
    if settings.qdrant_url:
        return ServerVectorIndex(settings.qdrant_url, settings.qdrant_collection, settings.qdrant_api_key)
    return EdgeVectorIndex(settings.qdrant_path)
