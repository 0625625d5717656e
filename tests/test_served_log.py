"""Feature logging: the served page logged with the features it was ranked with, the served log
in Redis, and its join with the interactions that followed (the ranker's served-impressions data)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from feed.batch.impressions import served_groups
from feed.config import RankingConfig
from feed.pipeline.candidate_hydrators import (
    AuthorReachHydrator,
    EngagementCountsHydrator,
    ImpressionsHydrator,
    PostFeaturesHydrator,
    SourcesHydrator,
    TrendingHydrator,
)
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import CandidateHydrator, FeedQuery
from feed.pipeline.features import (
    COLUMN,
    FEATURES,
    LAYOUT,
    SOURCE_BITS,
    FeatureLogger,
    action_weight_vector,
    attach_features,
    feature_matrix,
)
from feed.pipeline.runner import Pipeline
from feed.pipeline.side_effects import LogServedFeaturesSideEffect
from feed.stores import keys
from feed.stores.catalog.model import PostCatalog
from feed.stores.feature_store import UserFeatures
from feed.stores.messages import LoggedInteraction
from feed.stores.records import PostRecord
from feed.stores.served_log import ServedLog, ServedPage
from tests.conftest import Engine
from tests.helpers import unit, wait_for

HOUR = 3600.0
SCORES = {"a": 0.9, "b": 0.5, "c": 0.2}  # the formula's score of each post
WEIGHTS = action_weight_vector(RankingConfig().action_weights)


def catalog_of_three(now: float) -> PostCatalog:
    catalog = PostCatalog({"text": 384})
    catalog.upsert(
        [
            PostRecord(
                k, k, f"author-{k}", f"author-{k}", now - (i + 1) * HOUR, "text", k, {"text": unit(1, i)}
            )
            for i, k in enumerate(SCORES)
        ]
    )
    catalog.set_counts({"a": {"like": 3, "view": 7}, "c": {"hide": 1}})
    return catalog


class ListSource:
    name = "phoenix"

    def __init__(self, catalog: PostCatalog) -> None:
        self._catalog = catalog

    def enabled(self, query: FeedQuery) -> bool:
        return True

    async def fetch(self, query: FeedQuery) -> Candidates:
        return Candidates.of(self._catalog.rows_of(list(SCORES)), self.name)


class FormulaScorer:
    """Part `formula`: the fixed score of each post."""

    name = "formula"

    def __init__(self, catalog: PostCatalog) -> None:
        self._catalog = catalog

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        candidates.parts["formula"] = np.array([SCORES[self._catalog.keys[r]] for r in candidates.rows])


class StandInLearnedRanker:
    """What the learned ranker does with features: attaches them, scores (here: the formula's
    order reversed) and says which model ranked."""

    name = "learned_ranker"

    def __init__(self, catalog: PostCatalog) -> None:
        self._catalog = catalog

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        x = attach_features(self._catalog, query, candidates, WEIGHTS)
        candidates.parts = {"ranker": -x[:, COLUMN["prerank"]].astype(np.float64)}
        candidates.rescore()
        ranked = candidates.sort()
        ranked.ranker_version = 7
        return ranked


def hydrators(catalog: PostCatalog) -> list[CandidateHydrator]:
    """What the features need."""
    return [
        SourcesHydrator(),
        PostFeaturesHydrator(catalog),
        EngagementCountsHydrator(catalog),
        TrendingHydrator(catalog),
        ImpressionsHydrator(catalog),
        AuthorReachHydrator(catalog),
    ]


def pipeline(catalog: PostCatalog, log: ServedLog, learned: bool) -> Pipeline:
    return Pipeline(
        catalog=catalog,
        sources=[ListSource(catalog)],
        candidate_hydrators=hydrators(catalog),
        scorers=[FormulaScorer(catalog)],
        rerankers=[
            *([StandInLearnedRanker(catalog)] if learned else []),
            FeatureLogger(catalog, RankingConfig().action_weights),
        ],
        side_effects=[LogServedFeaturesSideEffect(log)],
    )


def query(now: float, preview: bool = False) -> FeedQuery:
    user = UserFeatures(vectors={"text": unit(1, 1)}, events=5, seen=frozenset(), affinity={"author-b": 1.0})
    return FeedQuery(user_id=1, user_key="1", limit=2, cursor="c", now=now, user=user, preview=preview)


async def expected_rows(catalog: PostCatalog, now: float) -> dict[str, np.ndarray]:
    """Each post's feature row, computed apart from the pipeline on the same window."""
    candidates = Candidates.of(catalog.rows_of(list(SCORES)), "phoenix")
    for hydrator in hydrators(catalog):
        await hydrator.hydrate(query(now), candidates)
    candidates.score = np.array(list(SCORES.values()))
    return dict(zip(SCORES, feature_matrix(catalog, query(now), candidates, WEIGHTS), strict=True))


@pytest.mark.parametrize(("learned", "page", "version"), [(False, ["a", "b"], 0), (True, ["c", "b"], 7)])
async def test_the_served_page_is_logged_with_the_features_it_was_ranked_with(
    redis_client: Any, learned: bool, page: list[str], version: int
) -> None:
    now = time.time()  # the log is read by its own clock too
    catalog = catalog_of_three(now)
    log = ServedLog(redis_client, 1000)
    feed = pipeline(catalog, log, learned)
    result = await feed.run(query(now))
    await feed.drain()
    assert [p.post_key for p in result.items] == page
    [entry] = await log.read(now - 1, now + 1)
    assert (entry.user, entry.at, entry.posts, entry.ranker_version, entry.layout) == (
        "1",
        now,
        page,
        version,
        LAYOUT,
    )
    rows = entry.rows()
    assert rows.shape == (2, len(FEATURES)) and rows.dtype == np.float32
    expected = await expected_rows(catalog, now)
    np.testing.assert_array_equal(rows, np.stack([expected[k] for k in page]))
    assert rows[:, COLUMN["prerank"]].tolist() == pytest.approx([SCORES[k] for k in page])

    await feed.run(query(now, preview=True))  # a preview logs nothing
    earlier = Candidates.of(feed.catalog.rows_of(["c"]), "phoenix")  # a session's stored ranking: no features
    await feed.run(query(now), ranked=earlier)  # nor does a page ranked earlier
    await feed.drain()
    assert await redis_client.xlen(keys.SERVED_LOG) == 1


async def test_the_served_log_round_trip_reads_by_serving_time(redis_client: Any) -> None:
    log = ServedLog(redis_client, 1000)
    now = time.time()
    rows = np.array([[1.0, np.nan, -2.5], [0.5, 0.0, 3.0]], dtype=np.float32)
    pages = [
        ServedPage.of("u", now - age, ["p1", "p2"], rows, LAYOUT, v) for age, v in ((30, 0), (20, 3), (10, 0))
    ]
    for page in pages:
        await log.append(page)
    assert await log.read(now - 25, now - 5, chunk=1) == pages[1:]
    assert await log.read(now - 40, now - 20) == pages[:1]  # the end is excluded
    assert await log.read(now - 3600, now - 1800) == []
    np.testing.assert_array_equal(pages[1].rows(), rows)

    capped = ServedLog(redis_client, 10)
    for _ in range(250):
        await capped.append(pages[0])
    assert await redis_client.xlen(keys.SERVED_LOG) < 250  # trimmed (approximately) to the cap


T = 1_000_000.0
WINDOW = 24 * HOUR


def served(user: str, at: float, posts: list[str], layout: int = LAYOUT) -> ServedPage:
    """A page whose feature rows are numbered by the posts' numbers (p3 -> a row of 3s)."""
    rows = np.array([[float(p[1:])] * len(FEATURES) for p in posts], dtype=np.float32)
    return ServedPage.of(user, at, posts, rows, layout, 0)


def did(user: str, post: str, action: str, at: float) -> LoggedInteraction:
    return LoggedInteraction(user, post, action, at)


def test_served_pages_are_joined_with_what_the_user_did_after() -> None:
    pages = [
        served("u", T, ["p1", "p2", "p3", "p4", "p9"]),
        served("v", T, ["p1", "p2"]),  # v did nothing after being served: no group
        served("u", T + HOUR, ["p1", "p5"]),  # p1 again within the window: labelled by the first serving
        served("u", T + WINDOW + HOUR, ["p1"]),  # p1 again after the window: a serving of its own
        served("w", T, ["p6"], layout=LAYOUT + 1),  # another release's columns
        served("x", T + 9 * WINDOW, ["p7"]),  # its like comes after the log's end
    ]
    events = [
        did("u", "p1", "like", T + 10),  # within the window: graded
        did("u", "p2", "like", T + WINDOW + 10),  # after the window: nothing
        did("u", "p3", "share", T - 10),  # before it was served: nothing
        did("u", "p4", "like", T + 20),
        did("u", "p4", "hide", T + 30),  # a negative after a like: grade 0
        did("v", "p1", "view", T - 5),
        did("u", "p5", "click", T + 2 * HOUR),
        did("u", "p1", "share", T + WINDOW + 2 * HOUR),
        did("w", "p6", "like", T + 10),
        did("x", "p7", "like", T + 9 * WINDOW + 20),
    ]
    groups = served_groups(
        reversed(pages), events, ranking=RankingConfig(), label_window_s=WINDOW, end=T + 9 * WINDOW + 10
    )
    assert [(x[:, 0].tolist(), y.tolist()) for x, y in groups] == [
        ([1, 2, 3, 4, 9], [3, 1, 1, 0, 1]),
        ([5], [2]),
        ([1], [4]),
    ]
    assert all(x.shape[1] == len(FEATURES) and x.dtype == np.float32 for x, _ in groups)


async def test_a_feed_call_logs_its_page_with_the_served_features(engine: Engine) -> None:
    engine.host.graphs["reader"] = {"following": ["chef"], "blocked": []}
    posts = {
        1: ("chef", "pasta with basil and tomatoes"),
        2: ("baker", "sourdough bread"),
        3: ("fan", "derby goal"),
    }
    for post_id, (author, text) in posts.items():
        await engine.client.post("/posts", json={"post_id": post_id, "author_id": author, "text": text})

    async def ingested() -> bool:
        states = [(await engine.client.get(f"/posts/{p}")).json()["state"] for p in posts]
        return all(s == "ingested" for s in states)

    await wait_for(ingested, timeout=60)
    log = ServedLog(engine.redis, engine.settings.served_log_max)
    start = time.time()
    body = (await engine.client.post("/feed", json={"user_id": "reader", "limit": 3})).json()
    assert len(body["items"]) == 3
    [entry] = await wait_for(lambda: log.read(start, time.time() + 1), timeout=10)
    assert entry.user == "reader" and entry.ranker_version == 0 and entry.layout == LAYOUT
    assert entry.posts == [str(item["post_id"]) for item in body["items"]]
    rows = entry.rows()
    assert rows.shape == (3, len(FEATURES)) and rows.dtype == np.float32
    src = [COLUMN[f"src_{name}"] for name in SOURCE_BITS]
    for item, x in zip(body["items"], rows, strict=True):
        assert x[COLUMN[f"src_{item['source']}"]] == 1.0  # found by the source it is credited to
        assert x[COLUMN["sources"]] == x[src].sum() >= 1
        assert x[COLUMN["in_network"]] == (item["author_id"] == "chef")
        assert x[COLUMN["src_thunder"]] == (item["author_id"] == "chef")
        # the formula's score, before the rerankers' factors
        parts = item["score_parts"]
        reranked = np.prod([parts.get(f, 1.0) for f in ("novelty", "author_diversity", "exploration")])
        assert x[COLUMN["prerank"]] == pytest.approx(item["score"] / reranked, rel=1e-4)
        assert x[COLUMN["prerank"]] > 0
        assert x[COLUMN["log_user_events"]] == 0.0 and 0.0 <= x[COLUMN["log_age_h"]] < np.log1p(1.0)
