"""The columnar candidate batch and the per-user retrieval cache."""

from __future__ import annotations

import time

import numpy as np

from feed.pipeline.framework import Candidates, FeedQuery
from feed.pipeline.retrieval_cache import RetrievalCache
from feed.social_graph import SocialGraph
from feed.stores.feature_store import UserFeatures


def test_concat_keeps_sources_parts_and_factors_and_take_indexes_every_column() -> None:
    a = Candidates.of(np.array([3, 4]), "a", np.array([0.5, 0.25]), in_network=True)
    a.parts["s"] = np.array([1.0, 2.0])
    b = Candidates.of(np.array([7]), "b")
    b.factors["f"] = np.array([0.5])
    both = Candidates.concat([a, b])
    assert both.rows.tolist() == [3, 4, 7] and both.source_names == ("a", "b")
    assert [both.source_names[s] for s in both.source] == ["a", "a", "b"]
    assert both.parts["s"].tolist() == [1.0, 2.0, 0.0] and both.factors["f"].tolist() == [1.0, 1.0, 0.5]
    assert both.in_network.tolist() == [True, True, False]
    assert both.rescore().tolist() == [1.0, 2.0, 0.0]
    best = both.sort()
    assert best.rows.tolist() == [4, 3, 7] and best.parts["s"].tolist() == [2.0, 1.0, 0.0]
    kept = both.take(np.array([False, True, True]))
    assert kept.rows.tolist() == [4, 7] and kept.source_score.tolist() == [0.25, 0.0]
    assert len(Candidates.concat([])) == 0


def query(events: int, blocked: frozenset[str] = frozenset()) -> FeedQuery:
    user = UserFeatures(vectors={}, events=events, seen=frozenset(), affinity={})
    return FeedQuery("u", "u", 10, "c", time.time(), user=user, graph=SocialGraph(blocked=blocked))


def test_retrieval_cache_reuses_a_result_until_the_user_interacts_or_it_expires() -> None:
    cache = RetrievalCache(ttl_s=60, max_users=10)
    found = Candidates.of(np.array([1, 2]), "phoenix", np.array([0.9, 0.8]))
    assert cache.get("phoenix", query(5)) is None
    cache.put("phoenix", query(5), found)
    again = cache.get("phoenix", query(5))
    assert again is not None and again.rows.tolist() == [1, 2] and again.source_score.tolist() == [0.9, 0.8]
    again.rows[0] = 99  # stages change batches in place: the cached copy must not follow
    assert cache.get("phoenix", query(5)).rows.tolist() == [1, 2]  # type: ignore[union-attr]
    assert cache.get("phoenix", query(6)) is None  # one more applied event: retrieve again
    assert cache.get("phoenix", query(5, blocked=frozenset({"a"}))) is None  # the exclusions changed
    assert cache.get("collaborative", query(5)) is None
    assert (cache.hits, cache.misses) == (2, 4)
    off = RetrievalCache(ttl_s=0, max_users=10)
    off.put("phoenix", query(5), found)
    assert off.get("phoenix", query(5)) is None
    expiring = RetrievalCache(ttl_s=0.05, max_users=10)
    expiring.put("phoenix", query(5), found)
    time.sleep(0.1)
    assert expiring.get("phoenix", query(5)) is None
