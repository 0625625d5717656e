"""The columnar candidate batch, and the per-user retrieval and ranking caches."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import numpy as np
from prometheus_client import REGISTRY

from feed.pipeline.candidate_hydrators import PostFeaturesHydrator
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.pipeline.filters import DuplicateFilter, MissingPostFilter
from feed.pipeline.paging import PagedFeed
from feed.pipeline.ranking_cache import RankingCache
from feed.pipeline.retrieval_cache import RetrievalCache
from feed.pipeline.runner import FeedResult, Pipeline
from feed.ranking.model import RankerModel, RankerSlot
from feed.social_graph import SocialGraph
from feed.stores import keys
from feed.stores.catalog.model import NO_ROW, PostCatalog
from feed.stores.feature_store import UserFeatures
from feed.stores.index.vectors import VectorHit
from feed.stores.rankings import SharedRankings
from feed.stores.records import PostRecord
from feed.stores.retrievals import SharedRetrievals
from feed.stores.sessions import FeedSessions


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


def lookups(cache: str, since: dict[str, float] | None = None) -> dict[str, float]:
    """The cache's lookups by result, as counted by its Prometheus counter (minus `since`)."""
    now = {
        r: REGISTRY.get_sample_value("feed_cache_lookups_total", {"cache": cache, "result": r}) or 0.0
        for r in ("hit", "shared_hit", "miss")
    }
    return {r: v - (since or {}).get(r, 0.0) for r, v in now.items()}


class _Search:
    """A nearest-neighbour search answering `hits`, counting its calls."""

    def __init__(self, hits: list[VectorHit]) -> None:
        self.hits = hits
        self.calls = 0

    async def __call__(self) -> list[VectorHit]:
        self.calls += 1
        return self.hits


async def test_retrieval_cache_reuses_a_result_until_the_user_interacts_or_it_expires() -> None:
    catalog = PostCatalog({"text": 4})
    catalog.upsert([post(k, "a", time.time()) for k in ("x", "y", "z")])
    search = _Search([VectorHit("z", 0.9), VectorHit("x", 0.8), VectorHit("gone", 0.7)])
    cache = RetrievalCache(catalog, ttl_s=60, max_users=10)
    before = lookups("retrieval")

    async def rows(q: FeedQuery, source: str = "phoenix", on: RetrievalCache = cache) -> list[int]:
        found: list[int] = (await on.fetch(source, q, search)).rows.tolist()
        return found

    first = await rows(query(5))
    assert first == [catalog.rows["z"], catalog.rows["x"], NO_ROW] and search.calls == 1
    again = await cache.fetch("phoenix", query(5), search)
    assert again.rows.tolist() == first and again.source_score.tolist() == [0.9, 0.8, 0.7]
    again.rows[0] = 99  # stages change batches in place: the kept copy must not follow
    assert await rows(query(5)) == first and search.calls == 1
    await rows(query(6))  # one more applied event: retrieve again
    await rows(query(5, blocked=frozenset({"a"})))  # the exclusions changed
    await rows(query(5), "collaborative")
    assert search.calls == 4 and lookups("retrieval", before) == {"hit": 2, "shared_hit": 0, "miss": 4}
    off = RetrievalCache(catalog, ttl_s=0, max_users=10)
    await rows(query(5), on=off)
    await rows(query(5), on=off)
    assert search.calls == 6
    expiring = RetrievalCache(catalog, ttl_s=0.05, max_users=10)
    await rows(query(5), on=expiring)
    await asyncio.sleep(0.1)
    await rows(query(5), on=expiring)
    assert search.calls == 8


async def test_retrieval_cache_is_shared_by_api_processes_through_redis(redis_client: Any) -> None:
    """Another process's catalogue numbers the same posts differently: it gets its own rows."""
    mine, theirs = PostCatalog({"text": 4}), PostCatalog({"text": 4})
    now = time.time()
    mine.upsert([post(k, "a", now) for k in ("x", "y", "z")])
    theirs.upsert([post(k, "a", now) for k in ("other", "z", "y", "x")])
    search = _Search([VectorHit("z", 0.9), VectorHit("x", 0.8)])
    here = RetrievalCache(mine, ttl_s=60, max_users=10, shared=SharedRetrievals(redis_client, 60))
    there = RetrievalCache(theirs, ttl_s=60, max_users=10, shared=SharedRetrievals(redis_client, 60))
    before = lookups("retrieval")
    assert (await here.fetch("phoenix", query(5), search)).rows.tolist() == [mine.rows["z"], mine.rows["x"]]
    found = await there.fetch("phoenix", query(5), search)
    assert found.rows.tolist() == [theirs.rows["z"], theirs.rows["x"]] != [mine.rows["z"], mine.rows["x"]]
    assert found.source_score.tolist() == [0.9, 0.8] and search.calls == 1
    assert len(await there.fetch("phoenix", query(5), search)) == 2  # now local
    assert lookups("retrieval", before) == {"hit": 1, "shared_hit": 1, "miss": 1}
    await there.fetch("phoenix", query(6), search)  # the user interacted: both layers miss
    assert search.calls == 2
    await here.fetch("phoenix", query(5), search)  # this process still has its own entry
    assert search.calls == 2
    assert await redis_client.pttl(keys.retrieval("phoenix", "u")) > 59_000


class _Scored:
    """A source of every catalogue post scored by its row, counting its calls."""

    name = "all"

    def __init__(self, catalog: PostCatalog) -> None:
        self.catalog = catalog
        self.calls = 0

    def enabled(self, q: FeedQuery) -> bool:
        return True

    async def fetch(self, q: FeedQuery) -> Candidates:
        self.calls += 1
        rows = np.array(sorted(self.catalog.rows.values()))
        return Candidates.of(rows, self.name, rows.astype(float))


class _SourceScore:
    name = "source_score"

    def enabled(self, q: FeedQuery) -> bool:
        return True

    def score(self, q: FeedQuery, c: Candidates) -> None:
        c.parts["s"] = c.source_score.copy()


def scored_pipeline(catalog: PostCatalog, source: _Scored) -> Pipeline:
    """`source`'s posts, hydrated, de-duplicated, scored by their source score."""
    return Pipeline(
        catalog=catalog,
        sources=[source],
        candidate_hydrators=[PostFeaturesHydrator(catalog)],
        filters=[DuplicateFilter(), MissingPostFilter()],
        scorers=[_SourceScore()],
    )


def post(key: str, author: str, created_at: float) -> PostRecord:
    return PostRecord(key, key, author, author, created_at, "text", "", {"text": np.ones(4, np.float32) / 2})


async def test_a_new_session_starts_from_the_users_kept_ranking_until_something_it_depends_on_changes(
    redis_client: Any,
) -> None:
    catalog = PostCatalog({"text": 4})
    now = time.time()
    catalog.upsert([post(f"p{i}", f"a{i % 3}", now - 100 + i) for i in range(10)])
    source = _Scored(catalog)
    slot = RankerSlot()
    cache = RankingCache(catalog, ttl_s=60, max_bytes=2**20, keep=8, ranker=slot)
    pipeline = scored_pipeline(catalog, source)
    sessions = FeedSessions(redis_client, 60, 60)
    feed = PagedFeed(pipeline, sessions, keep=2, cache=cache)

    def q(
        events: int = 1, following: frozenset[str] = frozenset({"a1"}), served: frozenset[str] = frozenset()
    ):
        user = UserFeatures(vectors={}, events=events, seen=frozenset(), affinity={})
        graph = SocialGraph(following=following)
        return FeedQuery("u", "u", 3, uuid.uuid4().hex, now, user=user, graph=graph, served=served)

    async def page(query: FeedQuery) -> FeedResult:
        return await feed.page(query, continuing=False)

    first = await page(q())
    assert [p.post_key for p in first.items] == ["p9", "p8", "p7"] and source.calls == 1
    second = q()
    again = await page(second)
    assert source.calls == 1 and [p.post_key for p in again.items] == ["p9", "p8", "p7"]
    assert {r.name: r.status for r in again.stages if r.stage in ("source", "scorer")} == {
        "all": "cached",
        "source_score": "cached",
    }
    assert again.items[0].parts == {"s": 9.0}
    assert [i.post_key for i in await sessions.take(second.cursor, 5)] == ["p6", "p5"]  # the session's rest
    catalog.remove(["p8"])  # filters still run over the kept ranking
    assert [p.post_key for p in (await page(q())).items] == ["p9", "p7", "p6"] and source.calls == 1
    await page(q(events=2))  # the user interacted
    assert source.calls == 2
    await page(q(events=2, following=frozenset({"a1", "a2"})))  # followed someone
    assert source.calls == 3
    catalog.upsert([post("new", "a2", now)])  # a followed author posted
    await page(q(events=2, following=frozenset({"a1", "a2"})))
    assert source.calls == 4
    await page(q(events=2, following=frozenset({"a1", "a2"}), served=frozenset({"p9"})))
    assert source.calls == 5  # a later page of a session re-ranks without what it served
    await page(q(events=2, following=frozenset({"a1", "a2"})))
    assert source.calls == 5  # kept
    await feed.preview(q(events=2, following=frozenset({"a1", "a2"})))
    assert source.calls == 6  # a preview ranks afresh
    slot.model = RankerModel(9, (), 0.0, None)  # type: ignore[arg-type]  # a new model deployed
    await page(q(events=2, following=frozenset({"a1", "a2"})))
    assert source.calls == 7
    off = RankingCache(catalog, ttl_s=0, max_bytes=2**20, keep=8, ranker=RankerSlot())
    assert not off.usable(q()) and await off.get(q()) is None
    ranking = Candidates.of(np.array(sorted(catalog.rows.values())), "all")
    brief = RankingCache(catalog, ttl_s=0.05, max_bytes=2**20, keep=8, ranker=RankerSlot())
    await brief.put(q(events=7), ranking.take(slice(0, 7)))  # shorter than keep: not kept
    assert await brief.get(q(events=7)) is None
    await brief.put(q(), ranking)
    assert await brief.get(q()) is not None
    await asyncio.sleep(0.1)
    assert await brief.get(q()) is None  # expired


async def test_another_api_process_starts_from_the_ranking_one_kept(redis_client: Any) -> None:
    """Through Redis: the other process numbers its catalogue's rows differently, gets the same
    posts with the same scores and features, and does not rank; a changed fingerprint misses."""
    now = time.time()
    posts = [post(f"p{i}", f"a{i % 3}", now - 100 + i) for i in range(10)]
    shared = SharedRankings(redis_client, 60)

    def process(order: list[PostRecord]) -> tuple[PagedFeed, _Scored, PostCatalog]:
        catalog = PostCatalog({"text": 4})
        catalog.upsert(order)
        source = _Scored(catalog)
        pipeline = scored_pipeline(catalog, source)
        cache = RankingCache(catalog, ttl_s=60, max_bytes=2**20, keep=8, ranker=RankerSlot(), shared=shared)
        return PagedFeed(pipeline, FeedSessions(redis_client, 60, 60), keep=2, cache=cache), source, catalog

    (one, one_source, _), (other, other_source, other_catalog) = process(posts), process(posts[::-1])

    def q(events: int = 1) -> FeedQuery:
        user = UserFeatures(vectors={}, events=events, seen=frozenset(), affinity={})
        return FeedQuery("u", "u", 3, uuid.uuid4().hex, now, user=user, graph=SocialGraph(frozenset({"a1"})))

    first = await one.page(q(), continuing=False)
    answered = await other.page(q(), continuing=False)
    assert other_source.calls == 0 and one_source.calls == 1
    assert [p.post_key for p in answered.items] == [p.post_key for p in first.items] == ["p9", "p8", "p7"]
    assert [p.parts for p in answered.items] == [p.parts for p in first.items]
    other_catalog.remove(["p9"])  # this process's filters still run over it
    assert [p.post_key for p in (await other.page(q(), continuing=False)).items] == ["p8", "p7", "p6"]
    await other.page(q(events=2), continuing=False)  # the user interacted since: ranked afresh
    assert other_source.calls == 1
