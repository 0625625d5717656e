"""The post vector index: Qdrant, embedded (Qdrant Edge shard) or a server by URL.

Both implementations store one point per post, id `point_id(post key)`, one named
vector per embedding space the post has (`text`, `image`), payload from
`PostRecord.payload()`, and answer the same queries, so the pipeline does not know
which one it talks to. A query with vectors in several spaces searches each and
fuses the ranked lists by reciprocal rank fusion (RRF) inside Qdrant.

The batch layer's item factors are one more named vector, `cf` (dot product), with the
model's version in the payload (`cf_version`): a search by a user's factors only looks at
points of the model the factors come from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from feed.config import Settings
from feed.ids import point_id
from feed.stores.records import IMAGE, TEXT, PostRecord

log = structlog.get_logger(__name__)

RRF_K = 60  # the usual RRF constant: rank r contributes 1 / (RRF_K + r)
CF = "cf"  # named vector of the CF item factors
CF_VERSION = "cf_version"  # payload: the CF model the point's factors come from


def space_dims(settings: Settings) -> dict[str, int]:
    """Vector size per embedding space (cosine), and of the CF item factors (dot product)."""
    return {TEXT: settings.text_dim, IMAGE: settings.clip_dim, CF: settings.cf_factors}


def _as_lists(vectors: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {space: v.astype(float).tolist() for space, v in vectors.items()}


Queries = Sequence[tuple[str, np.ndarray]]  # (embedding space, query vector) pairs


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A retrieval answer: the post key and its score (a nearest neighbour's cosine similarity;
    for the social source, how many followees engaged)."""

    post_key: str
    score: float


class PostSearch(Protocol):
    """The searches the candidate sources make (the vector index, or a snapshot's for training)."""

    async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        """Posts nearest to the query vectors, skipping posts by `exclude_authors`.

        One query: hits scored by cosine. Several (any spaces, a space may repeat): each
        query's `limit` nearest, fused by RRF.
        """

    async def nearest_cf(
        self, user: np.ndarray, version: int, limit: int, exclude_authors: list[str]
    ) -> list[VectorHit]:
        """Posts with the highest dot product with a user's CF factors, among those whose
        factors come from model `version`, skipping posts by `exclude_authors`."""


class VectorIndex(PostSearch, Protocol):
    """Narrow interface over the post vector store."""

    dims: dict[str, int]  # vector size per named vector

    async def prepare(self) -> bool:
        """Open or create the store; True when it starts empty (new, or replaced because its
        layout changed), so the caller should rebuild it from the stored post records."""

    async def upsert(self, records: list[PostRecord]) -> None:
        """Insert or replace the points of these posts."""

    async def delete(self, post_keys: list[str]) -> None:
        """Remove these posts' points; unknown keys are ignored."""

    async def clear(self) -> None:
        """Remove every point (before a rebuild from the stored records)."""

    async def set_cf(self, factors: dict[str, np.ndarray], version: int) -> int:
        """Store these posts' CF item factors, of model `version`; posts the index does not
        have are skipped. Returns how many were stored."""

    async def count(self) -> int:
        """Number of points stored."""

    async def close(self) -> None:
        """Release the store (flushes the embedded shard)."""


class EdgeVectorIndex:
    """Embedded Qdrant Edge shard in a folder; only one process may open it at a time.

    Searches are exact scans of int8 scalar-quantised vectors (pinned in RAM), rescored
    with the float32 originals (on disk, read through the page cache): about twice as fast
    as scanning the originals (100k posts, limit 1000: 5.9 ms against 10.9 here). There is
    no HNSW graph: building one held the GIL for about a minute per 100k posts, and at a
    limit of 1000 it was not faster. New points land in an appendable segment that is
    scanned unquantised; once `optimize_every` of them have arrived, `optimize()` quantises
    them, however few, into a segment of their own (segments stop growing at `SEGMENT_KB`,
    so this costs 0.2 to 1 s per 20k new points here, not a rewrite of the shard; it blocks
    the caller meanwhile).

    A shard whose vector layout differs from `dims` (written by an older version) is moved
    aside to `<folder>.incompatible-<time>` and a new one is created.
    """

    SEGMENT_KB = 50_000

    def __init__(self, path: Path, dims: dict[str, int], optimize_every: int = 20_000) -> None:
        import qdrant_edge as qe

        self._qe = qe
        self.dims = dims
        self._optimize_every = optimize_every
        self._unoptimized = 0
        config = qe.EdgeConfig(
            vectors={
                space: qe.EdgeVectorParams(
                    size=size,
                    distance=qe.Distance.Dot if space == CF else qe.Distance.Cosine,
                    memory=qe.Memory.Cold,  # originals on disk: only rescoring reads them
                    quantization_config=qe.ScalarQuantizationConfig(
                        qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
                    ),
                    hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10),
                )
                for space, size in dims.items()
            },
            optimizers=qe.EdgeOptimizersConfig(max_segment_size=self.SEGMENT_KB, indexing_threshold=1),
        )
        self._fresh = True
        if (path / "edge_config.json").exists():
            try:
                self._shard = qe.EdgeShard.load(str(path), config)
                self._fresh = False
                self.optimize()  # what the last run left unquantised (or a shard from before quantisation)
            except Exception as exc:
                if "incompatible" not in str(exc).lower():
                    raise
                aside = path.with_name(f"{path.name}.incompatible-{int(time.time())}")
                log.warning("vector_index_layout_changed", moved_to=str(aside), error=str(exc))
                path.rename(aside)
        if self._fresh:
            path.mkdir(parents=True, exist_ok=True)
            self._shard = qe.EdgeShard.create(str(path), config)
            # indexes on the fields queries filter by, no more (an index on created_at cost
            # 23 MB per 100k posts and no query used it)
            self._shard.update(qe.UpdateOperation.create_field_index("author", qe.PayloadSchemaType.Keyword))
            self._shard.update(
                qe.UpdateOperation.create_field_index(CF_VERSION, qe.PayloadSchemaType.Integer)
            )

    async def prepare(self) -> bool:
        return self._fresh

    async def upsert(self, records: list[PostRecord]) -> None:
        qe = self._qe
        points = [
            qe.Point(id=point_id(r.key), vector=_as_lists(r.vectors), payload=r.payload()) for r in records
        ]
        if points:
            self._shard.update(qe.UpdateOperation.upsert_points(points))
            self._unoptimized += len(points)
            if self._unoptimized >= self._optimize_every:
                self.optimize()

    def optimize(self) -> None:
        """Quantise the points added since the last call into searchable segments."""
        start = time.perf_counter()
        self._shard.optimize()
        log.info("vector_index_optimized", points=self._unoptimized, seconds=time.perf_counter() - start)
        self._unoptimized = 0

    async def delete(self, post_keys: list[str]) -> None:
        if post_keys:
            ids: list[int | str] = [point_id(k) for k in post_keys]
            self._shard.update(self._qe.UpdateOperation.delete_points(ids))  # type: ignore[arg-type]

    async def clear(self) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points_by_filter(self._qe.Filter()))

    async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        qe = self._qe
        if not queries:
            return []
        flt = None
        if exclude_authors:
            flt = qe.Filter(
                must_not=[qe.FieldCondition(key="author", match=qe.MatchAny(any=exclude_authors))]
            )
        nearest = [qe.Query.Nearest(v.astype(float).tolist(), using=space) for space, v in queries]
        if len(nearest) == 1:
            request = qe.QueryRequest(limit=limit, query=nearest[0], with_payload=["post"], filter=flt)
        else:
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[qe.Prefetch(limit=limit, query=q, filter=flt) for q in nearest],
                query=qe.Fusion.Rrf(k=RRF_K),
                with_payload=["post"],
            )
        hits = self._shard.query(request)
        return [VectorHit(str((h.payload or {})["post"]), float(h.score)) for h in hits]

    async def set_cf(self, factors: dict[str, np.ndarray], version: int) -> int:
        qe = self._qe
        if not factors:
            return 0
        ids = {point_id(k): v for k, v in factors.items()}
        present = [str(r.id) for r in self._shard.retrieve(list(ids), False, False)]
        if present:
            self._shard.update(
                qe.UpdateOperation.update_vectors(
                    [qe.PointVectors(i, {CF: ids[i].astype(float).tolist()}) for i in present]
                )
            )
            self._shard.update(qe.UpdateOperation.set_payload(present, {CF_VERSION: version}))
        return len(present)

    async def nearest_cf(
        self, user: np.ndarray, version: int, limit: int, exclude_authors: list[str]
    ) -> list[VectorHit]:
        qe = self._qe
        must_not = (
            [qe.FieldCondition(key="author", match=qe.MatchAny(any=exclude_authors))]
            if exclude_authors
            else []
        )
        flt = qe.Filter(
            must=[qe.FieldCondition(key=CF_VERSION, match=qe.MatchValue(version))], must_not=must_not
        )
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(user.astype(float).tolist(), using=CF),
            with_payload=["post"],
            filter=flt,
        )
        return [VectorHit(str((h.payload or {})["post"]), float(h.score)) for h in self._shard.query(request)]

    async def count(self) -> int:
        return int(self._shard.info().points_count)

    async def close(self) -> None:
        self._shard.flush()
        self._shard.close()


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


def open_vector_index(settings: Settings, replica: int = 0) -> VectorIndex:
    """The server index when `QDRANT_URL` is set, else API replica `replica`'s embedded shard
    under the data dir."""
    if settings.qdrant_url:
        return ServerVectorIndex(
            settings.qdrant_url, settings.qdrant_collection, space_dims(settings), settings.qdrant_api_key
        )
    return EdgeVectorIndex(settings.qdrant_path(replica), space_dims(settings))
