"""The learned ranker: its features, the point-in-time snapshot it trains on, training and the
deploy gate, the model swap in the API, and `explain` with per-feature contributions."""

from __future__ import annotations

import time
from typing import Any, cast

import numpy as np
import pytest
import redis as sync_redis

from feed.batch.labels import grade
from feed.batch.ranker import (
    Groups,
    chosen_strength,
    deployable,
    label_windows,
    ndcg,
    near_duplicate_ndcg,
    train_ranker,
)
from feed.batch.snapshot import SnapshotIndex, build_snapshot
from feed.config import Settings
from feed.pipeline.candidate_hydrators import AuthorReachHydrator, PostFeaturesHydrator, SourcesHydrator
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.pipeline.features import COLUMN, FEATURES, action_weight_vector, feature_matrix, window_rank
from feed.pipeline.scorers import SimilarityScorer
from feed.ranking.model import RankerModel
from feed.stores import keys
from feed.stores.catalog.model import PostCatalog
from feed.stores.feature_store import UserFeatures
from feed.stores.index.vectors import space_dims
from feed.stores.messages import LoggedInteraction
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from tests.conftest import Engine
from tests.helpers import unit, wait_for

HOUR = 3600.0
DAY = 24 * HOUR


def record(key: str, author: str, created_at: float, vector: np.ndarray) -> PostRecord:
    return PostRecord(key, key, author, author, created_at, "text", f"post {key}", {"text": vector})


def test_grades_and_ndcg() -> None:
    assert [grade(w) for w in ([], [0.05], [1.0], [1.5], [1.0, -1.5], [0.0])] == [1, 2, 3, 4, 0, 1]
    labels = np.array([1, 3, 1, 0])
    assert ndcg(np.array([0.5, 0.9, 0.3, 0.1]), labels) == pytest.approx(1.0)
    worse = ndcg(np.array([0.9, 0.1, 0.5, 0.95]), labels)  # the negative first, the hit last
    assert 0.0 < worse < 0.5


def test_a_new_model_is_deployed_only_when_it_validates_better() -> None:
    assert deployable({"formula": 0.20, "new": 0.25})[0]
    assert not deployable({"formula": 0.30, "new": 0.25})[0]
    # a deployed model is what the new one must beat, even when the formula is worse
    assert not deployable({"formula": 0.10, "current": 0.30, "new": 0.25})[0]
    ok, reason = deployable({"formula": 0.30, "current": 0.30, "new": 0.30})
    assert not ok and "current ranker stays" in reason


class FirstColumn:
    """Stands for a model: its raw score is the first feature."""

    def score(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x[:, 0].astype(np.float64)))


def test_each_training_cutoff_labels_as_long_a_window_as_validation() -> None:
    # a log of 100 days validated on its last 10: each training cutoff's labels cover the 10
    # days after it, and none reaches into the validation's
    assert label_windows([20 * DAY, 50 * DAY, 85 * DAY], 90 * DAY, 100 * DAY) == [
        (20 * DAY, 30 * DAY),
        (50 * DAY, 60 * DAY),
        (85 * DAY, 90 * DAY),
    ]


def test_near_duplicate_suppression_is_chosen_by_what_validation_users_engaged_with() -> None:
    catalog = PostCatalog({"text": 384})
    catalog.upsert([record(k, k, 0.0, v) for k, v in (("a", unit(1)), ("copy", unit(1)), ("b", unit(0, 1)))])
    posts = catalog.rows_of(["a", "copy", "b"])
    x = np.array([[3.0], [2.0], [1.0]])
    model = cast(RankerModel, FirstColumn())

    def choose(labels: list[int], rows: np.ndarray = posts) -> float:
        validation = Groups()
        validation.add(x, np.array(labels), rows)
        return chosen_strength(near_duplicate_ndcg(Settings(), catalog, model, validation))

    assert choose([3, 3, 1]) == 0.0  # users like both look-alikes: suppression would cost them
    assert choose([3, 1, 3]) == pytest.approx(0.9)  # the copy goes unliked: pushing it down pays
    # nothing to tell the strengths apart (no posts known to the catalogue): the setting's stays
    assert choose([3, 3, 1], np.full(3, -1)) == pytest.approx(0.9)


def test_window_rank_orders_each_users_batch_on_one_scale() -> None:
    """A heavy user's preferences are larger than a light user's; their ranks are comparable."""
    heavy, light = np.array([4.0, 9.0, np.nan, 1.0]), np.array([0.04, 0.09, np.nan, 0.01])
    np.testing.assert_array_equal(window_rank(heavy), [0.5, 1.0, np.nan, 0.0])
    np.testing.assert_array_equal(window_rank(heavy), window_rank(light))
    assert window_rank(np.array([np.nan])).tolist() == [pytest.approx(np.nan, nan_ok=True)]
    assert window_rank(np.array([3.0])).tolist() == [0.0] and len(window_rank(np.zeros(0))) == 0
    assert window_rank(np.array([2.0, 5.0, 2.0])).tolist() == [0.5, 1.0, 0.5]  # ties share a rank


async def test_features_record_every_source_and_the_followees_count() -> None:
    catalog = PostCatalog({"text": 384})
    now = time.time()
    catalog.upsert([record("a", "x", now - HOUR, unit(1, 0)), record("b", "y", now - DAY, unit(0, 1))])
    catalog.set_counts({"a": {"like": 3, "view": 7}})
    batches = [
        Candidates.of(catalog.rows_of(["a", "b"]), "phoenix", np.array([0.9, 0.1])),
        Candidates.of(catalog.rows_of(["a"]), "social", np.array([2.0])),
    ]
    candidates = Candidates.concat(batches)
    query = FeedQuery(
        "u",
        "u",
        10,
        "c",
        now,
        user=UserFeatures(vectors={"text": unit(1, 0)}, events=4, seen=frozenset(), affinity={"x": 2.0}),
    )
    for hydrator in (SourcesHydrator(), PostFeaturesHydrator(catalog), AuthorReachHydrator(catalog)):
        await hydrator.hydrate(query, candidates)
    candidates.counts = catalog.counts[candidates.rows]
    candidates.trending = np.zeros(3)
    candidates.impressions = np.zeros(3)
    candidates.score = np.array([0.5, 0.2, 0.5])
    x = feature_matrix(
        catalog, query, candidates, action_weight_vector({"like": 1.0, "view": 0.05, "hide": -1.0})
    )
    assert x.shape == (3, len(FEATURES)) and x.dtype == np.float32
    a, b = x[0], x[1]
    assert a[COLUMN["src_phoenix"]] == a[COLUMN["src_social"]] == 1.0 and a[COLUMN["sources"]] == 2
    assert b[COLUMN["src_social"]] == 0.0 and b[COLUMN["sources"]] == 1
    assert a[COLUMN["followees_engaged"]] == 2.0 and b[COLUMN["followees_engaged"]] == 0.0
    assert a[COLUMN["sim_text"]] == pytest.approx(1.0) and b[COLUMN["sim_text"]] == pytest.approx(0.0)
    # the best cosine's rank within the batch: a (and its duplicate row) above b; no CF, no rank
    assert a[COLUMN["sim_rank"]] == x[2, COLUMN["sim_rank"]] == 1.0 and b[COLUMN["sim_rank"]] == 0.0
    assert np.isnan(x[:, COLUMN["cf_rank"]]).all()
    assert np.isnan(a[COLUMN["sim_text_short"]]) and np.isnan(a[COLUMN["cf"]])  # no short vector, no CF
    assert a[COLUMN["rate_like"]] == pytest.approx(3 / 20) and a[COLUMN["log_interactions"]] == pytest.approx(
        np.log1p(10)
    )
    assert a[COLUMN["log_positive"]] == pytest.approx(np.log1p(3 + 0.35)) and a[COLUMN["log_negative"]] == 0.0
    assert a[COLUMN["affinity"]] == 2.0 and a[COLUMN["author_share"]] == 1.0 and b[COLUMN["affinity"]] == 0.0
    assert a[COLUMN["log_age_h"]] == pytest.approx(np.log1p(1.0), abs=1e-3)
    assert a[COLUMN["prerank"]] == pytest.approx(0.5) and a[COLUMN["log_user_events"]] == pytest.approx(
        np.log1p(4)
    )
    # the similarity scorer's cosines (text weighted 0 there: still kept) are the features' own
    weights = action_weight_vector({"like": 1.0})
    SimilarityScorer(catalog, 1.0, {"text": 0.0}, 0.3).score(query, candidates)
    assert candidates.cosines is not None
    reused = feature_matrix(catalog, query, candidates, weights)
    kept = candidates.cosines
    candidates.cosines = None
    np.testing.assert_array_equal(reused, feature_matrix(catalog, query, candidates, weights))
    candidates.cosines = np.full_like(kept, 0.25)  # read, not computed again
    assert (feature_matrix(catalog, query, candidates, weights)[:, COLUMN["sim_text"]] == 0.25).all()


async def test_the_snapshot_rebuilds_what_the_event_consumer_built(engine: Engine) -> None:
    """Events sent through the API, then a snapshot from the log: the same counts, trending,
    reach, interest vectors, affinity and seen set as the live engine's."""
    from feed.stores.catalog.sync import CatalogSync
    from feed.stores.feature_store import FeatureStore
    from feed.stores.interaction_log import read_interactions

    texts = {1: "pasta with basil", 2: "sourdough bread", 3: "football derby goal"}
    for post_id, text in texts.items():
        r = await engine.client.post(
            "/posts", json={"post_id": post_id, "author_id": f"a{post_id}", "text": text}
        )
        assert r.status_code == 202
    store = FeatureStore(engine.redis)
    await wait_for(lambda: _all_ingested(engine, list(texts)), timeout=60)
    base = time.time() - 3 * HOUR
    sent = [("u1", 1, "like", 0), ("u1", 2, "view", 600), ("u2", 1, "share", 900), ("u1", 3, "hide", 1200)]
    for user, post, action, offset in sent:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + offset))
        r = await engine.client.post(
            "/interaction", json={"user_id": user, "post_id": post, "action": action, "occurred_at": at}
        )
        assert r.status_code == 202
    await wait_for(lambda: _applied(engine, len(sent)), timeout=30)

    live = PostCatalog(space_dims(engine.settings), horizons_s=engine.settings.ranking.trending_horizons_s)
    await CatalogSync(engine.redis, live).load()
    posts = [p async for batch in store.all_posts() for p in batch]
    events = sorted(await read_interactions(engine.redis), key=lambda e: e.ts)
    now = time.time()
    snapshot = build_snapshot(engine.settings, space_dims(engine.settings), posts, events, now, ["u1", "u2"])
    rebuilt = snapshot.catalog
    for key in ("1", "2", "3"):
        assert np.array_equal(rebuilt.counts[rebuilt.rows[key]], live.counts[live.rows[key]])
    rows_live, rows_rebuilt = live.rows_of(["1", "2", "3"]), rebuilt.rows_of(["1", "2", "3"])
    assert np.allclose(rebuilt.trending_values(rows_rebuilt, now), live.trending_values(rows_live, now))
    assert rebuilt.horizon_values(rows_rebuilt, now).shape == (
        3,
        len(engine.settings.ranking.trending_horizons_s),
    )
    assert np.allclose(rebuilt.horizon_values(rows_rebuilt, now), live.horizon_values(rows_live, now))
    assert rebuilt.horizon_values(rows_rebuilt, now)[0].min() > 0  # post 1: a like and a share
    assert rebuilt.reach[rebuilt.author_codes["a1"]] == live.reach[live.author_codes["a1"]] == 2
    for user in ("u1", "u2"):
        mine, theirs = snapshot.users[user], await store.user_features(user)
        assert mine.events == theirs.events and mine.seen == theirs.seen
        assert (
            mine.affinity == pytest.approx(theirs.affinity) and mine.hidden_authors == theirs.hidden_authors
        )
        # rebuilt from the catalogue's int8 vectors: within half a step (1/254 of the largest component)
        for space, vector in theirs.vectors.items():
            assert np.allclose(mine.vectors[space], vector, rtol=0, atol=4e-3)
        for space, vector in theirs.short_vectors.items():
            assert np.allclose(mine.short_vectors[space], vector, rtol=0, atol=4e-3)
    assert [p for p, _ in snapshot.engaged["u2"]] == [
        "1"
    ] and "u1" in snapshot.engaged  # the like, not the view


async def _all_ingested(engine: Engine, post_ids: list[int]) -> bool:
    states = [(await engine.client.get(f"/posts/{p}")).json()["state"] for p in post_ids]
    return all(s == "ingested" for s in states)


async def _applied(engine: Engine, n: int) -> bool:
    return int(await engine.redis.get(keys.APPLIED_EVENTS) or 0) >= n


async def test_the_snapshot_index_searches_only_what_existed() -> None:
    catalog = PostCatalog({"text": 384})
    catalog.upsert(
        [
            record("a", "x", 0.0, unit(1, 0)),
            record("b", "y", 0.0, unit(1, 1)),
            record("c", "z", 0.0, unit(0, 1)),
        ]
    )
    index = SnapshotIndex(catalog)
    hits = await index.nearest([("text", unit(1, 0))], 2, [])
    assert [h.post_key for h in hits] == ["a", "b"]
    assert [h.post_key for h in await index.nearest([("text", unit(1, 0))], 2, ["x"])] == ["b", "c"]


def write_log(settings: Any, users: int = 80, posts: int = 60, seed: int = 0) -> None:
    """A history in which every user likes old posts and ignores new ones, whatever their text:
    the hand-set formula (freshness first) ranks exactly the wrong way, a learned model can see it."""
    rng = np.random.default_rng(seed)
    r = sync_redis.Redis.from_url(settings.redis_url)
    now = time.time()
    start = now - 40 * DAY
    created = {f"p{i}": start + i * 0.5 * DAY for i in range(posts)}
    for key, at in created.items():
        commit_ingested(r, record(key, f"author-{key}", at, unit(*rng.normal(size=8))))
    entries = []
    for u in range(users):
        at = start + rng.uniform(0.3, 1.0) * 40 * DAY
        for _ in range(6):
            at += rng.uniform(0.1, 2.0) * HOUR
            existing = [k for k, c in created.items() if c < at]
            oldest = existing[: max(3, len(existing) // 4)]
            entries.append((f"u{u}", str(rng.choice(oldest)), "like", min(at, now - 1)))
            entries.append((f"u{u}", str(rng.choice(existing[-5:])), "view", min(at, now - 1) + 1))
    entries.sort(key=lambda e: e[3])
    for user, post, action, at in entries:
        r.xadd(keys.INTERACTION_LOG, {"user": user, "post": post, "action": action, "ts": repr(at)})
    r.close()


@pytest.mark.timeout(300)
async def test_training_learns_what_the_formula_misses_and_deploys_only_when_better(
    settings: Any, redis_client: Any
) -> None:
    from feed.ranking.model import RankerModel
    from feed.stores.ranker_store import RankerStore

    write_log(settings)
    settings = settings.model_copy(
        update={
            "ranking": settings.ranking.model_copy(update={"ranker_min_groups": 5, "ranker_max_groups": 200})
        }
    )
    store = RankerStore(redis_client)
    report = await train_ranker(redis_client, settings)
    assert report is not None and report.train_groups >= 5 and report.validation_groups > 0
    assert report.deployed, report
    assert report.ndcg_at_10["new"] > report.ndcg_at_10["formula"]
    assert report.importance and set(report.importance) <= set(FEATURES)
    assert await store.version() == report.version
    raw = await store.model()
    assert raw is not None and RankerModel.from_bytes(raw).version == report.version
    kept = [RankerModel.from_bytes(r) for r in [raw]]

    # the same data again: the new model only ties the deployed one, which stays
    again = await train_ranker(redis_client, settings)
    assert again is not None and not again.deployed and "current" in again.ndcg_at_10
    assert await store.version() == report.version == kept[0].version
    reports = await store.reports(5)
    assert len(reports) == 2  # both trainings are reported, newest first
    assert b'"deployed":false' in reports[0] and b'"deployed":true' in reports[1]


async def test_explain_shows_the_model_and_each_feature_contribution(engine: Engine) -> None:
    """A deployed model reaches the API within its poll; `explain` names it and shows each
    feature's contribution, which add up to the raw score."""
    import lightgbm as lgb

    from feed.ranking.model import RankerModel
    from feed.stores.ranker_store import RankerStore

    for post_id, text in {1: "pasta with basil", 2: "sourdough bread", 3: "football derby goal"}.items():
        await engine.client.post(
            "/posts", json={"post_id": post_id, "author_id": f"a{post_id}", "text": text}
        )
    await wait_for(lambda: _all_ingested(engine, [1, 2, 3]), timeout=60)
    formula = (await engine.client.post("/feed", json={"user_id": "u9", "limit": 3, "explain": True})).json()
    assert formula["ranker"] == {"kind": "formula", "version": None}

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURES))).astype(np.float32)
    y = (x[:, COLUMN["log_age_h"]] < 0).astype(int) + 1
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5},
        lgb.Dataset(x, y, group=[40] * 10, feature_name=list(FEATURES)),
        num_boost_round=5,
    )
    await RankerStore(engine.redis).deploy(7, RankerModel(7, FEATURES, time.time(), booster).to_bytes())

    async def learned() -> Any:
        body = (
            await engine.client.post("/feed", json={"user_id": "u10", "limit": 3, "explain": True})
        ).json()
        return body if body["ranker"]["kind"] == "learned" else None

    body = await wait_for(learned, timeout=15, every=0.5)
    assert body["ranker"] == {"kind": "learned", "version": 7}
    for item in body["items"]:
        shares = item["contributions"]
        assert set(shares) == {*FEATURES, "base"}
        raw = sum(shares.values())
        assert item["score_parts"]["ranker"] == pytest.approx(1 / (1 + np.exp(-raw)), rel=1e-4)
    stages = {s["name"]: s["status"] for s in body["stages"]}
    assert stages["learned_ranker"] == "ok"
    plain = (await engine.client.post("/feed", json={"user_id": "u11", "limit": 3})).json()
    assert all(item["contributions"] is None for item in plain["items"])


def test_logged_interactions_are_typed() -> None:
    e = LoggedInteraction("u", "p", "like", 1.5)
    assert (e.user, e.post, e.action, e.ts) == ("u", "p", "like", 1.5)


def test_compiled_trees_predict_as_lightgbm_and_are_kept_for_other_processes(tmp_path: Any) -> None:
    import lightgbm as lgb

    from feed.ranking.model import RankerModel

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    x[::5, 2] = np.nan  # missing values route as LightGBM routes them
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5},
        lgb.Dataset(x, (x[:, 0] > 0).astype(int) + 1, group=[30] * 10),
        num_boost_round=8,
    )
    model = RankerModel(3, tuple(f"f{i}" for i in range(6)), 0.0, booster)
    compiled = model.with_compiled(tmp_path)
    assert compiled.compiled is not None and (tmp_path / "3.o").exists()
    assert np.allclose(compiled.predict(x), model.predict(x), atol=1e-6)
    again = model.with_compiled(tmp_path)  # another process: loads the kept object file
    assert np.allclose(again.predict(x), model.predict(x), atol=1e-6)
