"""Feed sessions on real Redis: pages keep the first ranking's order, never repeat, and work
across API replicas (two `PagedFeed`s sharing only Redis)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from feed.pipeline.candidate_hydrators import PostFeaturesHydrator
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.pipeline.filters import BlockedAuthorFilter, DuplicateFilter, MissingPostFilter, ServedFilter
from feed.pipeline.hydrators import ServedPostsHydrator
from feed.pipeline.paging import PagedFeed
from feed.pipeline.runner import FeedResult, Pipeline
from feed.social_graph import SocialGraph
from feed.stores.catalog.model import PostCatalog
from feed.stores.catalog.sync import CatalogSync
from feed.stores.post_store import PostStore, commit_ingested
from feed.stores.records import PostRecord
from feed.stores.sessions import FeedSessions
from tests.helpers import unit

N = 30
RANKING = sorted((f"p{i}" for i in range(N)), key=lambda k: -((int(k[1:]) * 7 + 13) % N))  # first call's


class _Shuffle:
    """The scores of every post, shared by all replicas' sources: they change on every call, so
    a page that re-ranked instead of continuing the stored ranking would show it."""

    def __init__(self) -> None:
        self.calls = 0

    def scores(self) -> np.ndarray:
        self.calls += 1
        return np.array([float((i * 7 + self.calls * 13) % N) for i in range(N)])


class _AllPosts:
    """A source returning every post, from its replica's catalogue, with `_Shuffle`'s scores as
    its source scores."""

    name = "all_posts"

    def __init__(self, shuffle: _Shuffle, catalog: PostCatalog) -> None:
        self._shuffle = shuffle
        self._catalog = catalog

    def enabled(self, q: FeedQuery) -> bool:
        return True

    async def fetch(self, q: FeedQuery) -> Candidates:
        rows = self._catalog.rows_of(f"p{i}" for i in range(N))
        return Candidates.of(rows, self.name, source_score=self._shuffle.scores())


class _SourceScore:
    """Part `s`: the source's score (a batch's parts do not survive the runner's concatenation
    of the sources' batches, its source scores do)."""

    name = "source_score"

    def enabled(self, q: FeedQuery) -> bool:
        return True

    def score(self, q: FeedQuery, candidates: Candidates) -> None:
        candidates.parts["s"] = candidates.source_score.copy()


class _Graph:
    name = "social_graph"
    blocked: frozenset[str] = frozenset()

    def enabled(self, q: FeedQuery) -> bool:
        return True

    async def hydrate(self, q: FeedQuery) -> None:
        q.graph = SocialGraph(blocked=self.blocked)


@dataclass
class Replica:
    """One API process: its own post catalogue, loaded from Redis, and its paged feed."""

    feed: PagedFeed
    catalog: PostCatalog
    sync: CatalogSync

    async def page(self, q: FeedQuery, continuing: bool) -> FeedResult:
        return await self.feed.page(q, continuing)


async def replica(redis: Any, shuffle: _Shuffle, graph: _Graph, keep: int = 100) -> Replica:
    sessions = FeedSessions(redis, ttl_s=60, ranking_ttl_s=60)
    catalog = PostCatalog({"text": 384})
    sync = CatalogSync(redis, catalog)
    assert await sync.load() == N
    pipeline = Pipeline(
        catalog=catalog,
        hydrators=[ServedPostsHydrator(sessions), graph],
        sources=[_AllPosts(shuffle, catalog)],
        candidate_hydrators=[PostFeaturesHydrator(catalog)],
        filters=[
            DuplicateFilter(),
            MissingPostFilter(),
            BlockedAuthorFilter(catalog),
            ServedFilter(catalog),
        ],
        scorers=[_SourceScore()],
    )
    return Replica(PagedFeed(pipeline, sessions, keep), catalog, sync)


def store_posts(settings: Any) -> None:
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    for i in range(N):
        record = PostRecord(
            f"p{i}", f"p{i}", f"a{i % 5}", f"a{i % 5}", time.time(), "text", "t", {"text": unit(1)}
        )
        commit_ingested(r, record)
    r.close()


def query(cursor: str, limit: int) -> FeedQuery:
    return FeedQuery(user_id="u", user_key="u", limit=limit, cursor=cursor, now=time.time())


async def test_pages_continue_the_first_ranking_on_any_replica(settings: Any, redis_client: Any) -> None:
    store_posts(settings)
    source, graph = _Shuffle(), _Graph()
    a, b = await replica(redis_client, source, graph), await replica(redis_client, source, graph)
    first = await a.page(query("c1", 10), continuing=False)
    assert source.calls == 1
    order = [c.post_key for c in first.items]
    second = await b.page(query("c1", 10), continuing=True)  # another replica
    order += [c.post_key for c in second.items]
    assert source.calls == 1  # no re-ranking: the stored ranking continued
    assert {s.status for s in second.stages if s.stage == "source"} == {"ranked_before"}
    assert second.items[0].parts and second.items[0].score > 0  # explanations survive
    third = await a.page(query("c1", 10), continuing=True)
    order += [c.post_key for c in third.items]
    assert len(order) == len(set(order)) == N
    assert order == RANKING
    assert (await a.page(query("c1", 10), continuing=True)).items == []  # the end


async def test_a_post_deleted_or_an_author_blocked_between_pages_does_not_come_back(
    settings: Any, redis_client: Any
) -> None:
    store_posts(settings)
    source, graph = _Shuffle(), _Graph()
    feed = await replica(redis_client, source, graph)
    first = [c.post_key for c in (await feed.page(query("c2", 5), continuing=False)).items]
    upcoming = next(k for k in RANKING[5:] if not k.endswith(("0", "5")))
    await PostStore(redis_client).delete(upcoming)
    await feed.sync.poll()  # what the replica's catalogue sync does in the background
    assert upcoming not in feed.catalog.rows
    graph.blocked = frozenset({"a0"})  # the author of p0, p5, p10, ...
    rest: list[str] = []
    while items := (await feed.page(query("c2", 5), continuing=True)).items:
        rest += [c.post_key for c in items]
    assert first == RANKING[:5]
    assert rest == [k for k in RANKING[5:] if k != upcoming and int(k[1:]) % 5]


async def test_the_pipeline_runs_again_when_the_stored_ranking_runs_out(
    settings: Any, redis_client: Any
) -> None:
    store_posts(settings)
    source, graph = _Shuffle(), _Graph()
    feed = await replica(redis_client, source, graph, keep=5)  # only one more page is stored
    served: list[str] = []
    while items := (await feed.page(query("c3", 5), continuing=bool(served))).items:
        served += [c.post_key for c in items]
    assert len(served) == len(set(served)) == N
    assert source.calls == 4  # 10 posts per run (a page + 5 stored), and one run that found none left


async def test_concurrent_pages_of_one_session_never_share_a_post(settings: Any, redis_client: Any) -> None:
    store_posts(settings)
    source, graph = _Shuffle(), _Graph()
    replicas = [await replica(redis_client, source, graph) for _ in range(3)]
    await replicas[0].page(query("c4", 3), continuing=False)
    pages = await asyncio.gather(*(r.page(query("c4", 3), continuing=True) for r in replicas))
    keys = [c.post_key for p in pages for c in p.items]
    assert len(keys) == len(set(keys)) == 9


async def test_sessions_store_rankings_compactly_and_give_back_the_score_parts(redis_client: Any) -> None:
    from feed.stores import keys
    from feed.stores.sessions import SessionItem, SessionRanking

    sessions = FeedSessions(redis_client, ttl_s=60, ranking_ttl_s=30)
    n = 200
    nan = float("nan")
    keys_ = [f"post{i}" for i in range(n)]
    keys_[3] = "odd"
    similarity = np.array([0.5 + i / 1000 for i in range(n)])
    similarity[3] = 0.125
    engagement = np.full(n, 0.25)
    engagement[3] = nan  # "odd" has other parts than the rest
    cf = np.full(n, nan)
    cf[3] = 0.5
    freshness = np.full(n, 0.75)
    freshness[3] = nan
    rest = SessionRanking(
        post_keys=keys_,
        sources=["fresh" if i == 3 else "phoenix" for i in range(n)],
        scores=np.array([1.5 if i == 3 else 2.0 - i / 100 for i in range(n)]),
        in_network=np.array([i % 2 == 0 and i != 3 for i in range(n)]),
        parts={"similarity": similarity, "engagement": engagement, "cf": cf},
        factors={"freshness": freshness},
    )
    await sessions.save("s", ["first"], rest)
    assert 0 < await redis_client.ttl(keys.session_ranking("s")) <= 30
    assert await redis_client.ttl(keys.served("s")) > 30
    # one value for the whole ranking, not one list element per candidate
    assert await redis_client.type(keys.session_ranking("s")) == b"string"
    per_item = await redis_client.memory_usage(keys.session_ranking("s")) / 200
    assert per_item < 40, per_item
    got = await sessions.take("s", 5)
    assert [g.post_key for g in got] == ["post0", "post1", "post2", "odd", "post4"]
    assert got[3] == SessionItem("odd", "fresh", 1.5, {"similarity": 0.125, "cf": 0.5}, {}, False)
    assert got[1].parts == pytest.approx({"similarity": 0.501, "engagement": 0.25})
    assert got[1].factors == {"freshness": 0.75} and got[1].score == 1.99 and not got[1].in_network
    assert [g.post_key for g in await sessions.take("s", 3)] == ["post5", "post6", "post7"]
    assert [g.post_key for g in await sessions.take("s", 500)] == keys_[8:]  # what is left
    assert await sessions.take("s", 5) == []
    assert await sessions.served("s") == frozenset({"first"})
    empty = SessionRanking([], [], np.zeros(0), np.zeros(0, bool), {}, {})
    await sessions.save("s", ["post0"], empty)  # a fresh run with nothing left
    assert await sessions.take("s", 5) == []
