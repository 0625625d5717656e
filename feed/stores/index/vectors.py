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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import structlog

from feed.config import Settings
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


class IndexReader(PostSearch, Protocol):
    """What an API process needs of the index: its searches, and how many points it holds."""

    async def count(self) -> int:
        """Number of points stored."""

    async def close(self) -> None:
        """Release the store (flushes the embedded shard; closes a connection)."""


class VectorIndex(IndexReader, Protocol):
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
