"""Per-user cache of a finished ranking: what a hot user's next new feed starts from.

A feed ranks about 10,000 candidates; a user who opens their feed again a few seconds
later, having done nothing, would get the same ranking computed again. So the best
`keep` candidates after the rerankers are kept per user, under a key that changes with
everything that would change the ranking soon after: the user's applied event count (any
interaction they make), their CF model, their social graph, and the newest post of an
author they follow. For at most `ttl_s` a new feed session starts from it: the query
hydrators, candidate hydrators and filters still run (a post deleted, seen or blocked
meanwhile drops out, features are current), but sources, scorers and rerankers do not.
What the key does not follow (other users' engagement, new out-of-network posts) reaches
the feed when the entry expires. Bounded by `max_bytes` (least recently used go first);
per process.
"""

from __future__ import annotations

from cachetools import TLRUCache

from feed.metrics import CACHE_LOOKUPS
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.ranking.model import RankerSlot
from feed.stores.catalog.model import PostCatalog

Key = tuple[str, int, int, int, float, int]
HITS, MISSES = CACHE_LOOKUPS.labels("ranking", "hit"), CACHE_LOOKUPS.labels("ranking", "miss")


def _nbytes(batch: Candidates) -> int:
    columns = [batch.rows, batch.source, batch.in_network, batch.score, *batch.parts.values()]
    if batch.cosines is not None:
        columns.append(batch.cosines)
    if batch.features is not None:
        columns.append(batch.features)
    return sum(c.nbytes for c in [*columns, *batch.factors.values()]) + 200


class RankingCache:
    """Finished rankings per (user, what they were ranked from)."""

    def __init__(
        self, catalog: PostCatalog, ttl_s: float, max_bytes: int, keep: int, ranker: RankerSlot
    ) -> None:
        self._catalog = catalog
        self._ranker = ranker  # a newly deployed model ranks afresh
        self._keep = keep
        self._ttl_s = ttl_s
        self._cache: TLRUCache[Key, Candidates] | None = None
        if ttl_s > 0 and max_bytes > 0:
            self._cache = TLRUCache(maxsize=max_bytes, ttu=lambda _k, _v, now: now + ttl_s, getsizeof=_nbytes)

    def _key(self, query: FeedQuery) -> Key:
        graph = query.graph
        followed = self._catalog.authors_of(graph.following) if graph.following else None
        newest = self._catalog.latest_post_time(followed) if followed is not None else 0.0
        fingerprint = hash((graph.following, graph.blocked, graph.muted, graph.muted_keywords))
        model = self._ranker.model
        return (
            query.user_key,
            query.user.events,
            query.user.cf_version,
            fingerprint,
            newest,
            model.version if model is not None else 0,
        )

    def usable(self, query: FeedQuery) -> bool:
        """Only a new session's ranking is kept or reused: a later page's excludes what the
        session served."""
        return self._cache is not None and not query.served

    def get(self, query: FeedQuery) -> Candidates | None:
        """A copy of the user's kept ranking, or None."""
        if self._cache is None or not self.usable(query):
            return None
        found = self._cache.get(self._key(query))
        if found is None:
            MISSES.inc()
            return None
        HITS.inc()
        return found.take(slice(None))

    def put(self, query: FeedQuery, ranked: Candidates) -> None:
        """Keep the best `keep` of a new session's ranking (scored and reranked, best first).
        A ranking shorter than `keep` is not kept: with so few candidates ranking again is
        cheap, and a post published meanwhile (which the key does not follow unless its author
        is followed) must not wait for the entry to expire to reach a near-empty feed."""
        if self._cache is None or not self.usable(query) or len(ranked) < self._keep:
            return
        self._cache[self._key(query)] = ranked.take(slice(0, self._keep))
