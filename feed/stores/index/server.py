"""The vector index on a Qdrant server, by URL (qdrant-client)."""

from __future__ import annotations

import numpy as np
import structlog

from feed.ids import point_id
from feed.stores.index.vectors import CF, CF_VERSION, RRF_K, Queries, VectorHit, _as_lists
from feed.stores.records import PostRecord

log = structlog.get_logger(__name__)


class ServerVectorIndex:
    """A Qdrant server (or cluster) by URL, through qdrant-client's async API.

    `url=":memory:"` runs qdrant-client's in-process mode (tests use it).
    """

    def __init__(self, url: str, collection: str, dims: dict[str, int], api_key: str | None = None) -> None:
        from qdrant_client import AsyncQdrantClient

        self._client = AsyncQdrantClient(location=url, api_key=api_key)
        self._collection = collection
        self.dims = dims
        self._ready = False
        self._created = False

    async def prepare(self) -> bool:
        await self._ensure_collection()
        return self._created

    async def _ensure_collection(self) -> None:
        if self._ready:
            return
        from qdrant_client import models

        if not await self._client.collection_exists(self._collection):
            self._created = True
            await self._client.create_collection(
                self._collection,
                vectors_config={
                    space: models.VectorParams(
                        size=size, distance=models.Distance.DOT if space == CF else models.Distance.COSINE
                    )
                    for space, size in self.dims.items()
                },
            )
            await self._client.create_payload_index(
                self._collection, "author", models.PayloadSchemaType.KEYWORD
            )
            await self._client.create_payload_index(
                self._collection, CF_VERSION, models.PayloadSchemaType.INTEGER
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
                        vector=_as_lists(r.vectors),
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

    async def clear(self) -> None:
        from qdrant_client import models

        await self._ensure_collection()
        await self._client.delete(
            self._collection, points_selector=models.FilterSelector(filter=models.Filter())
        )

    async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        from qdrant_client import models

        await self._ensure_collection()
        if not queries:
            return []
        flt = None
        if exclude_authors:
            flt = models.Filter(
                must_not=[models.FieldCondition(key="author", match=models.MatchAny(any=exclude_authors))]
            )
        vectors = [(space, v.astype(float).tolist()) for space, v in queries]
        if len(vectors) == 1:
            ((space, vector),) = vectors
            result = await self._client.query_points(
                self._collection,
                query=vector,
                using=space,
                limit=limit,
                query_filter=flt,
                with_payload=["post"],
            )
        else:
            result = await self._client.query_points(
                self._collection,
                prefetch=[
                    models.Prefetch(query=v, using=space, limit=limit, filter=flt) for space, v in vectors
                ],
                query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)),
                limit=limit,
                with_payload=["post"],
            )
        return [VectorHit(str((p.payload or {})["post"]), float(p.score)) for p in result.points]

    async def set_cf(self, factors: dict[str, np.ndarray], version: int) -> int:
        from qdrant_client import models

        await self._ensure_collection()
        if not factors:
            return 0
        ids = {point_id(k): v for k, v in factors.items()}
        found = await self._client.retrieve(self._collection, list(ids), with_payload=False)
        present = [str(p.id) for p in found]
        if present:
            await self._client.update_vectors(
                self._collection,
                points=[
                    models.PointVectors(id=i, vector={CF: ids[i].astype(float).tolist()}) for i in present
                ],
            )
            await self._client.set_payload(
                self._collection, {CF_VERSION: version}, points=models.PointIdsList(points=list(present))
            )
        return len(present)

    async def nearest_cf(
        self, user: np.ndarray, version: int, limit: int, exclude_authors: list[str]
    ) -> list[VectorHit]:
        from qdrant_client import models

        await self._ensure_collection()
        must_not: list[models.Condition] = []
        if exclude_authors:
            must_not.append(models.FieldCondition(key="author", match=models.MatchAny(any=exclude_authors)))
        result = await self._client.query_points(
            self._collection,
            query=user.astype(float).tolist(),
            using=CF,
            limit=limit,
            query_filter=models.Filter(
                must=[models.FieldCondition(key=CF_VERSION, match=models.MatchValue(value=version))],
                must_not=must_not,
            ),
            with_payload=["post"],
        )
        return [VectorHit(str((p.payload or {})["post"]), float(p.score)) for p in result.points]

    async def count(self) -> int:
        await self._ensure_collection()
        return (await self._client.count(self._collection)).count

    async def close(self) -> None:
        await self._client.close()
