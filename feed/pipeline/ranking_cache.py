"""Per-user cache of a finished ranking: what a hot user's next new feed starts from.

A feed ranks about 10,000 candidates; a user who opens their feed again a few seconds
later, having done nothing, would get the same ranking computed again. So the best
`keep` candidates after the rerankers are kept per user, under a fingerprint that changes
with everything that would change the ranking soon after: the user's applied event count
(any interaction they make), their CF model, their social graph, the newest post of an
author they follow, and the ranker's model. For at most `ttl_s` a new feed session starts
from it: the query hydrators, candidate hydrators and filters still run (a post deleted,
seen or blocked meanwhile drops out, features are current), but sources, scorers and
rerankers do not. What the fingerprint does not follow (other users' engagement, new
out-of-network posts) reaches the feed when the entry expires.

Two layers, as for retrievals: this process's own (bounded by `max_bytes`, least recently
used go first), and, when given `SharedRankings`, one every API process shares (post keys
and columns in Redis, expiring after `ttl_s`), so a user's next feed served by another API
process, or another host, does not rank again.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from cachetools import TLRUCache

from feed.metrics import CACHE_LOOKUPS
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.ranking.model import RankerSlot
from feed.stores.catalog.model import PostCatalog
from feed.stores.rankings import Column, SharedRanking, SharedRankings

Key = tuple[str, str]  # user key, fingerprint
LOCAL_HITS, SHARED_HITS, MISSES = (CACHE_LOOKUPS.labels("ranking", r) for r in ("hit", "shared_hit", "miss"))
NOT_SHARED = frozenset(
    {"rows", "texts"}
)  # rows are catalogue-local (post keys go instead); the candidate hydrators, which run again on a
# hit, fill the rest from the current catalogue
NOT_SHARED = frozenset(
    {
        "rows",
        "alive",
        "author",
        "created_at",
        "counts",
        "trending",
        "impressions",
        "author_reach",
        "cf",
        "cf_known",
        "texts",
        "found_by",
        "followees_engaged",
    }
)


def _nbytes(batch: Candidates) -> int:
    columns = [batch.rows, batch.source, batch.in_network, batch.score, *batch.parts.values()]
    if batch.cosines is not None:
        columns.append(batch.cosines)
    if batch.features is not None:
        columns.append(batch.features)
    return sum(c.nbytes for c in [*columns, *batch.factors.values()]) + 200


def _digest(*groups: frozenset[str]) -> str:
    text = "\n\n".join("\n".join(sorted(group)) for group in groups)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _column(array: np.ndarray) -> Column:
    return Column(array.dtype.str, list(array.shape), np.ascontiguousarray(array).tobytes())


def to_shared(catalog: PostCatalog, fingerprint: str, batch: Candidates) -> SharedRanking:
    """A batch as other processes can read it: post keys for rows, every numeric column."""
    columns: dict[str, Column] = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if f.name in NOT_SHARED:
            continue
        if isinstance(value, np.ndarray):
            columns[f.name] = _column(value)
        elif isinstance(value, dict):
            columns.update({f"{f.name}.{name}": _column(v) for name, v in value.items()})
    keys = catalog.keys
    post_keys = [keys[r] for r in batch.rows.tolist()]
    return SharedRanking(fingerprint, post_keys, list(batch.source_names), batch.ranker_version, columns)


def from_shared(catalog: PostCatalog, shared: SharedRanking) -> Candidates:
    """The batch back, with this catalogue's rows (NO_ROW for a post it no longer has)."""
    fields: dict[str, object] = {
        "rows": catalog.rows_of(shared.post_keys),
        "source_names": tuple(shared.source_names),
        "ranker_version": shared.ranker_version,
    }
    groups: dict[str, dict[str, np.ndarray]] = {"parts": {}, "factors": {}, "contributions": {}}
    for name, column in shared.columns.items():
        array = np.frombuffer(column.data, dtype=column.dtype).reshape(column.shape).copy()
        group, _, member = name.partition(".")
        if member:
            groups[group][member] = array
        else:
            fields[name] = array
    return Candidates(**fields, **groups)  # type: ignore[arg-type]


class RankingCache:
    """Finished rankings per (user, what they were ranked from)."""

    def __init__(
        self,
        catalog: PostCatalog,
        ttl_s: float,
        max_bytes: int,
        keep: int,
        ranker: RankerSlot,
        shared: SharedRankings | None = None,
    ) -> None:
        self._catalog = catalog
        self._ranker = ranker  # a newly deployed model ranks afresh
        self._keep = keep
        self._cache: TLRUCache[Key, Candidates] | None = None
        self._shared: SharedRankings | None = None
        if ttl_s > 0 and max_bytes > 0:
            self._cache = TLRUCache(maxsize=max_bytes, ttu=lambda _k, _v, now: now + ttl_s, getsizeof=_nbytes)
            self._shared = shared

    def _key(self, query: FeedQuery) -> Key:
        graph = query.graph
        followed = self._catalog.authors_of(graph.following) if graph.following else None
        newest = self._catalog.latest_post_time(followed) if followed is not None else 0.0
        model = self._ranker.model
        graph_digest = _digest(graph.following, graph.blocked, graph.muted, frozenset(graph.muted_keywords))
        fingerprint = (
            f"{query.user.events}:{query.user.cf_version}:{graph_digest}:{newest!r}:"
            f"{model.version if model is not None else 0}"
        )
        return query.user_key, fingerprint

    def usable(self, query: FeedQuery) -> bool:
        """Only a new session's ranking is kept or reused: a later page's excludes what the
        session served."""
        return self._cache is not None and not query.served

    async def get(self, query: FeedQuery) -> Candidates | None:
        """A copy of the user's kept ranking (this process's, else the shared one), or None."""
        if self._cache is None or not self.usable(query):
            return None
        key = self._key(query)
        found = self._cache.get(key)
        if found is not None:
            LOCAL_HITS.inc()
            return found.take(slice(None))
        shared = await self._shared.get(key[0]) if self._shared is not None else None
        if shared is None or shared.fingerprint != key[1]:
            MISSES.inc()
            return None
        SHARED_HITS.inc()
        found = from_shared(self._catalog, shared)
        self._cache[key] = found
        return found.take(slice(None))

    async def put(self, query: FeedQuery, ranked: Candidates) -> None:
        """Keep the best `keep` of a new session's ranking (scored and reranked, best first).
        A ranking shorter than `keep` is not kept: with so few candidates ranking again is
        cheap, and a post published meanwhile (which the key does not follow unless its author
        is followed) must not wait for the entry to expire to reach a near-empty feed."""
        if self._cache is None or not self.usable(query) or len(ranked) < self._keep:
            return
        key = self._key(query)
        kept = ranked.take(slice(0, self._keep))
        self._cache[key] = kept
        if self._shared is not None:
            await self._shared.put(key[0], to_shared(self._catalog, key[1], kept))
