"""The embedded vector index: a Qdrant Edge shard in the data folder (qdrant-edge-py)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from feed.ids import point_id, point_uuid
from feed.stores.index.vectors import CF, CF_VERSION, RRF_K, Queries, VectorHit, _as_lists
from feed.stores.records import PostRecord

log = structlog.get_logger(__name__)


class EdgeVectorIndex:
    """Embedded Qdrant Edge shard in a folder; only one process may open it at a time (the
    host's index owner, `feed/index_owner.py`).

    Each sealed segment has an HNSW graph (`HNSW_M` links, built with `HNSW_EF_CONSTRUCT`)
    over int8 scalar-quantised vectors (pinned in RAM); hits are rescored with the float32
    originals (on disk, read through the page cache). A search explores at least
    `HNSW_EF_MIN` nodes (and `limit`). New points land in an appendable segment that is
    scanned exactly, so they are searchable at once; once `optimize_every` of them have
    arrived, `optimize()` seals them and builds their graph, merging small segments into
    one of up to `SEGMENT_KB` of vectors (about 130k 384-d posts). A search visits every
    segment, so few large ones are what make it fast (100k posts, limit 1,000: 1.7 ms in 2
    segments of up to 200 MB, 6.3 ms in 6 of up to 50 MB); the price is rebuilding a merged
    segment's graph (building 100k posts 20k at a time took 17 s against 7 s), paid off the
    search path.
    Both searching and optimising hold the GIL, so neither runs in an API process; with
    `optimize_every=0` nothing is optimised here, not even on opening (the index owner has a
    copy optimised in a child process instead: `builds.py`), and `unoptimized` counts the
    points waiting for it.

    Searches return point ids only: reading the `post` payload of 1,000 hits cost more than
    the search itself (9.2 against 2.1 ms at 100k posts here), so the index keeps the post
    key of each point id in memory (filled from the shard on opening, then by each write).

    A shard whose vector layout differs from `dims` (written by an older version) is moved
    aside to `<folder>.incompatible-<time>` and a new one is created.
    """

    SEGMENT_KB = 200_000
    SEGMENTS = 2  # the optimiser merges the smallest segments while there are more
    HNSW_M = 16
    HNSW_EF_CONSTRUCT = 64
    HNSW_EF_MIN = 128

    def __init__(self, path: Path, dims: dict[str, int], optimize_every: int = 20_000) -> None:
        import qdrant_edge as qe

        self._qe = qe
        self.dims = dims
        self._optimize_every = optimize_every
        self.path = path
        self.unoptimized = 0
        self._keys: dict[int, str] = {}  # point UUID as an int -> post key
        config = qe.EdgeConfig(
            vectors={
                space: qe.EdgeVectorParams(
                    size=size,
                    distance=qe.Distance.Dot if space == CF else qe.Distance.Cosine,
                    memory=qe.Memory.Cold,  # originals on disk: only rescoring reads them
                    quantization_config=qe.ScalarQuantizationConfig(
                        qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
                    ),
                    hnsw_config=qe.HnswIndexConfig(
                        m=self.HNSW_M, ef_construct=self.HNSW_EF_CONSTRUCT, full_scan_threshold=10
                    ),
                )
                for space, size in dims.items()
            },
            optimizers=qe.EdgeOptimizersConfig(
                max_segment_size=self.SEGMENT_KB, default_segment_number=self.SEGMENTS, indexing_threshold=1
            ),
        )
        self._fresh = True
        if (path / "edge_config.json").exists():
            try:
                self._shard = qe.EdgeShard.load(str(path), config)
                self._fresh = False
                self._load_keys()
                info = self._shard.info()  # points the last run left in the unindexed segment
                self.unoptimized = max(0, info.points_count - info.indexed_vectors_count)
                if optimize_every:
                    self.optimize()
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

    def _load_keys(self, batch: int = 10_000) -> None:
        qe = self._qe
        offset = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=batch, with_payload=["post"], with_vector=False)
            )
            for record in records:
                self._keys[_as_uuid(record.id).int] = str((record.payload or {})["post"])
            if offset is None:
                return

    def _hits(self, points: list[Any]) -> list[VectorHit]:
        keys = self._keys
        return [
            VectorHit(key, float(p.score))
            for p in points
            if (key := keys.get(_as_uuid(p.id).int)) is not None
        ]

    async def prepare(self) -> bool:
        return self._fresh

    async def upsert(self, records: list[PostRecord]) -> None:
        qe = self._qe
        points = [
            qe.Point(id=point_id(r.key), vector=_as_lists(r.vectors), payload=r.payload()) for r in records
        ]
        if points:
            self._shard.update(qe.UpdateOperation.upsert_points(points))
            self._keys.update((point_uuid(r.key).int, r.key) for r in records)
            self.unoptimized += len(points)
            if self._optimize_every and self.unoptimized >= self._optimize_every:
                self.optimize()

    def optimize(self) -> None:
        """Seal the points added since the last call into quantised segments with HNSW graphs."""
        start = time.perf_counter()
        self._shard.optimize()
        log.info("vector_index_optimized", points=self.unoptimized, seconds=time.perf_counter() - start)
        self.unoptimized = 0

    def flush(self) -> None:
        """Write everything to the folder (before it is copied)."""
        self._shard.flush()

    async def delete(self, post_keys: list[str]) -> None:
        if post_keys:
            ids: list[int | str] = [point_id(k) for k in post_keys]
            self._shard.update(self._qe.UpdateOperation.delete_points(ids))  # type: ignore[arg-type]
            for key in post_keys:
                self._keys.pop(point_uuid(key).int, None)

    async def clear(self) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points_by_filter(self._qe.Filter()))
        self._keys.clear()

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
        params = self._params(limit)
        if len(nearest) == 1:
            request = qe.QueryRequest(
                limit=limit, query=nearest[0], with_payload=False, filter=flt, params=params
            )
        else:
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[qe.Prefetch(limit=limit, query=q, filter=flt, params=params) for q in nearest],
                query=qe.Fusion.Rrf(k=RRF_K),
                with_payload=False,
            )
        hits = self._shard.query(request)
        return self._hits(hits)

    def _params(self, limit: int) -> Any:
        return self._qe.SearchParams(hnsw_ef=max(self.HNSW_EF_MIN, limit))

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
            with_payload=False,
            filter=flt,
            params=self._params(limit),
        )
        return self._hits(self._shard.query(request))

    async def count(self) -> int:
        return int(self._shard.info().points_count)

    async def close(self) -> None:
        self._shard.flush()
        self._shard.close()


def _as_uuid(point: object) -> uuid.UUID:
    """A point id as Edge returns it (a UUID; a string in older releases)."""
    return point if isinstance(point, uuid.UUID) else uuid.UUID(str(point))
