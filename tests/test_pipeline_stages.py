"""Each pipeline component alone, on plain data, and the runner's contract."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import warnings
from typing import Any, cast

import numpy as np
import pytest
import redis

from feed.config import RankingConfig
from feed.pipeline.candidate_hydrators import (
    AuthorReachHydrator,
    EngagementCountsHydrator,
    ImpressionsHydrator,
    PostFeaturesHydrator,
    PostTextsHydrator,
    TrendingHydrator,
)
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.pipeline.filters import (
    BlockedAuthorFilter,
    DuplicateFilter,
    HiddenAuthorFilter,
    MaxAgeFilter,
    MissingPostFilter,
    MutedKeywordFilter,
    OwnPostFilter,
    SeenFilter,
    ServedFilter,
)
from feed.pipeline.rerankers import (
    AuthorDiversityReranker,
    ExplorationReranker,
    NearDuplicateReranker,
    mmr_novelty,
)
from feed.pipeline.runner import Pipeline
from feed.pipeline.scorers import (
    AuthorAffinityScorer,
    EngagementScorer,
    FreshnessScorer,
    NetworkScorer,
    SimilarityScorer,
    SmallAuthorScorer,
)
from feed.ranking.model import RankerModel, RankerSlot
from feed.social_graph import SocialGraph
from feed.stores.catalog.model import NO_ROW, PostCatalog
from feed.stores.feature_store import FeatureStore, UserFeatures
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord
from tests.helpers import unit

NOW = 1_800_000_000.0
DIMS = {"text": 384, "image": 512}


def record(
    key: str,
    author: str = "a",
    age_s: float = 0.0,
    vector: np.ndarray | None = None,
    image: np.ndarray | None = None,
    text: str = "",
    transcript: str = "",
    tags: dict[str, int] | None = None,
) -> PostRecord:
    """A post with a text vector (`unit(1)` unless given), or only an image vector when only
    `image` is given."""
    vectors: dict[str, np.ndarray] = {}
    if vector is not None or image is None:
        vectors["text"] = unit(1) if vector is None else vector
    if image is not None:
        vectors["image"] = image
    return PostRecord(
        key=key,
        post_id=key,
        author_id=author,
        author_key=author,
        created_at=NOW - age_s,
        post_type="text",
        text=text,
        vectors=vectors,
        tags=tags or {},
        transcript=transcript,
    )


def catalog_of(*records: PostRecord) -> PostCatalog:
    catalog = PostCatalog(DIMS)
    catalog.upsert(records)
    return catalog


def batch(
    catalog: PostCatalog, keys_: list[str], source: str = "phoenix", in_network: bool = False
) -> Candidates:
    """Candidates for these posts (unknown ones get NO_ROW), from one source, not hydrated."""
    return Candidates.of(catalog.rows_of(keys_), source, in_network=in_network)


async def hydrate(catalog: PostCatalog, candidates: Candidates, q: FeedQuery | None = None) -> Candidates:
    """Fill every column the catalogue has (everything but `texts` and `cf`)."""
    for hydrator in (
        PostFeaturesHydrator(catalog),
        EngagementCountsHydrator(catalog),
        TrendingHydrator(catalog),
        ImpressionsHydrator(catalog),
        AuthorReachHydrator(catalog),
    ):
        await hydrator.hydrate(q or query(), candidates)
    return candidates


async def hydrated(
    catalog: PostCatalog, keys_: list[str], q: FeedQuery | None = None, source: str = "phoenix"
) -> Candidates:
    return await hydrate(catalog, batch(catalog, keys_, source), q)


def query(**kw: object) -> FeedQuery:
    q = FeedQuery(user_id=1, user_key="1", limit=10, cursor="c", now=NOW)
    for k, v in kw.items():
        setattr(q, k, v)
    return q


def user(vector: np.ndarray | None = None, seen: frozenset[str] = frozenset(), **aff: float) -> UserFeatures:
    return UserFeatures(
        vectors={} if vector is None else {"text": vector}, events=1, seen=seen, affinity=dict(aff)
    )


def keys(catalog: PostCatalog, candidates: Candidates) -> list[str]:
    return [catalog.keys[r] if r != NO_ROW else "?" for r in candidates.rows.tolist()]


def kept(catalog: PostCatalog, candidates: Candidates, mask: np.ndarray) -> list[str]:
    """The keys a filter's mask keeps, in order (checking it is a mask over the batch)."""
    assert mask.dtype == np.bool_ and mask.shape == (len(candidates),)
    return keys(catalog, candidates.take(mask))


def test_duplicate_filter_keeps_first_source() -> None:
    catalog = catalog_of(record("1"), record("2"))
    candidates = Candidates.concat([batch(catalog, ["1"], "thunder"), batch(catalog, ["1", "2"])])
    mask = DuplicateFilter().apply(query(), candidates)
    out = candidates.take(mask)
    assert keys(catalog, out) == ["1", "2"] and out.source_names[out.source[0]] == "thunder"
    assert mask.tolist() == [True, False, True]


async def test_missing_post_filter_drops_deleted() -> None:
    catalog = catalog_of(record("2"), record("gone"))
    candidates = batch(catalog, ["x", "2", "gone"])  # x was never ingested
    catalog.remove(["gone"])  # deleted after the source found it
    await hydrate(catalog, candidates)
    assert kept(catalog, candidates, MissingPostFilter().apply(query(), candidates)) == ["2"]


async def test_own_posts_filter() -> None:
    catalog = catalog_of(record("1", author="1"), record("2", author="9"))
    candidates = await hydrated(catalog, ["1", "2"])
    assert kept(catalog, candidates, OwnPostFilter(catalog).apply(query(), candidates)) == ["2"]


async def test_blocked_and_muted_authors_filter() -> None:
    q = query(graph=SocialGraph(blocked=frozenset({"b"}), muted=frozenset({"m"})))
    catalog = catalog_of(record("1", "b"), record("2", "m"), record("3", "ok"))
    f = BlockedAuthorFilter(catalog)
    assert f.enabled(q)
    candidates = await hydrated(catalog, ["1", "2", "3"], q)
    assert kept(catalog, candidates, f.apply(q, candidates)) == ["3"]
    assert not f.enabled(query())


def test_seen_and_served_filters() -> None:
    q = query(user=user(seen=frozenset({"1"})), served=frozenset({"2"}))
    catalog = catalog_of(record("1"), record("2"), record("3"))
    candidates = batch(catalog, ["1", "2", "3"])
    assert kept(catalog, candidates, SeenFilter(catalog).apply(q, candidates)) == ["2", "3"]
    assert kept(catalog, candidates, ServedFilter(catalog).apply(q, candidates)) == ["1", "3"]


async def test_muted_keywords_drop_posts_mentioning_them_as_whole_words(
    settings: Any, redis_client: Any
) -> None:
    records = [
        record("title", text="Season finale SPOILER inside"),
        record("plural", text="no spoilers here"),
        record("speech", transcript="the world cup final was great"),
        record("photo", tags={"dog": 2}),
        record("clean", text="a quiet walk"),
    ]
    r = redis.Redis.from_url(settings.redis_url)
    for rec in records:
        assert commit_ingested(r, rec)
    r.close()
    catalog = catalog_of(*records)
    candidates = batch(catalog, [rec.key for rec in records])
    graph = SocialGraph(muted_keywords=frozenset({"spoiler", "world cup", "dog"}))
    texts = PostTextsHydrator(catalog, FeatureStore(redis_client))
    assert texts.enabled(query(graph=graph)) and not texts.enabled(query())
    await texts.hydrate(query(graph=graph), candidates)
    mask = MutedKeywordFilter().apply(query(graph=graph), candidates)
    assert kept(catalog, candidates, mask) == ["plural", "clean"]
    assert not MutedKeywordFilter().enabled(query())


async def test_hidden_author_filter() -> None:
    hiding = UserFeatures(
        vectors={}, events=2, seen=frozenset(), affinity={}, hidden_authors=frozenset({"troll"})
    )
    catalog = catalog_of(record("1", "troll"), record("2", "friend"))
    candidates = await hydrated(catalog, ["1", "2"])
    mask = HiddenAuthorFilter(catalog).apply(query(user=hiding), candidates)
    assert kept(catalog, candidates, mask) == ["2"]


async def test_max_age_filter() -> None:
    catalog = catalog_of(record("old", age_s=7200), record("new", age_s=10))
    candidates = await hydrated(catalog, ["old", "new"])
    assert kept(catalog, candidates, MaxAgeFilter(3600).apply(query(), candidates)) == ["new"]


def test_similarity_scorer_prefers_closer_posts_and_is_neutral_for_cold_users() -> None:
    catalog = catalog_of(
        record("near", vector=unit(1, 0.1)),
        record("far", vector=unit(-1, 1)),
        record("x", vector=unit(1)),
        record("y", vector=unit(0, 1)),
    )
    scorer = SimilarityScorer(catalog, 1.0, {"text": 1.0, "image": 1.0}, 0.5)
    candidates = batch(catalog, ["near", "far"])
    scorer.score(query(user=user(vector=unit(1))), candidates)
    near, far = candidates.parts["similarity"].tolist()
    assert near > far
    cold = batch(catalog, ["x", "y"])
    SimilarityScorer(catalog, 1.0, {"text": 1.0, "image": 1.0}, 0.5).score(query(), cold)
    assert cold.parts["similarity"][0] == cold.parts["similarity"][1] == pytest.approx(0.5)


def test_similarity_averages_the_spaces_user_and_post_share() -> None:
    dog = unit(1, dim=512)
    catalog = catalog_of(
        record("photo", image=dog),
        record("both", vector=unit(1), image=unit(0, 1, dim=512)),
        record("text_only", vector=unit(1)),
    )
    q = query(
        user=UserFeatures(vectors={"text": unit(1), "image": dog}, events=3, seen=frozenset(), affinity={})
    )
    candidates = batch(catalog, ["photo", "both", "text_only"])
    SimilarityScorer(catalog, 1.0, {"text": 1.0, "image": 1.0}, 0.5).score(q, candidates)
    photo, both, text_only = candidates.parts["similarity"].tolist()
    assert photo == pytest.approx(1.0)  # image only: cos 1
    assert both == pytest.approx(0.75)  # mean of cos 1 (text) and 0 (image)
    assert text_only == pytest.approx(1.0)
    candidates = batch(catalog, ["photo", "both"])
    SimilarityScorer(catalog, 1.0, {"text": 1.0, "image": 0.0}, 0.5).score(q, candidates)
    photo, both = candidates.parts["similarity"].tolist()
    assert photo == pytest.approx(0.5)  # image space switched off: neutral
    assert both == pytest.approx(1.0)


def test_similarity_mixes_long_and_short_term_interests() -> None:
    catalog = catalog_of(record("sports", vector=unit(1, 0)), record("cooking", vector=unit(0, 1)))
    drifting = UserFeatures(
        vectors={"text": unit(1, 0)},
        events=9,
        seen=frozenset(),
        affinity={},
        short_vectors={"text": unit(0, 1)},
    )
    candidates = batch(catalog, ["sports", "cooking"])
    SimilarityScorer(catalog, 1.0, {"text": 1.0}, 0.75).score(query(user=drifting), candidates)
    sports, cooking = candidates.parts["similarity"].tolist()
    assert sports == pytest.approx((1 + 0.25) / 2)
    assert cooking == pytest.approx((1 + 0.75) / 2)
    only_short = UserFeatures(
        vectors={}, events=1, seen=frozenset(), affinity={}, short_vectors={"text": unit(0, 1)}
    )
    SimilarityScorer(catalog, 1.0, {"text": 1.0}, 0.75).score(query(user=only_short), candidates)
    assert candidates.parts["similarity"][1] == pytest.approx(1.0)


async def test_engagement_scorer_weighs_negative_actions_heavily() -> None:
    catalog = catalog_of(record("l"), record("r"))
    catalog.set_counts({"l": {"like": 3}, "r": {"like": 3, "report": 2}})
    candidates = await hydrated(catalog, ["l", "r"])
    EngagementScorer(RankingConfig()).score(query(), candidates)
    liked, reported = candidates.parts["engagement"].tolist()
    assert liked > 0 > reported


async def test_affinity_scorer() -> None:
    catalog = catalog_of(record("1", "fav"), record("2", "x"))
    candidates = await hydrated(catalog, ["1", "2"])
    AuthorAffinityScorer(catalog, 0.3).score(query(user=user(fav=5.0)), candidates)
    fav, other = candidates.parts["affinity"].tolist()
    assert fav > other == 0.0


async def test_freshness_halves_per_half_life() -> None:
    catalog = catalog_of(record("n", age_s=0), record("o", age_s=3600))
    candidates = await hydrated(catalog, ["n", "o"])
    FreshnessScorer(3600).score(query(), candidates)
    new, old = candidates.factors["freshness"].tolist()
    assert new == pytest.approx(1.0)
    assert old == pytest.approx(0.5)


def test_network_scorer() -> None:
    catalog = catalog_of(record("1"), record("2"))
    candidates = Candidates.concat([batch(catalog, ["1"], "thunder", in_network=True), batch(catalog, ["2"])])
    NetworkScorer(1.0, 0.5).score(query(), candidates)
    assert candidates.factors["network"].tolist() == [1.0, 0.5]


async def ranked(catalog: PostCatalog, scores: dict[str, float], q: FeedQuery | None = None) -> Candidates:
    """These posts, hydrated, with part `s` set to their scores, best first (as rerankers get them)."""
    candidates = await hydrated(catalog, list(scores), q)
    candidates.parts["s"] = np.array(list(scores.values()))
    candidates.rescore()
    return candidates.sort()


async def test_author_diversity_decays_repeated_authors() -> None:
    catalog = catalog_of(record("a1", "a"), record("a2", "a"), record("b1", "b"))
    candidates = await ranked(catalog, {"a1": 1.0, "a2": 0.9, "b1": 0.8})
    out = AuthorDiversityReranker(0.5).rerank(query(), candidates)
    assert keys(catalog, out) == ["a1", "b1", "a2"]
    assert out.factors["author_diversity"].tolist() == [1.0, 1.0, 0.5]
    assert out.score.tolist() == pytest.approx([1.0, 0.8, 0.45])


def own(key: str, text: np.ndarray | None = None, image: np.ndarray | None = None) -> PostRecord:
    """A post by its own author."""
    return record(key, author=key, vector=text, image=image)


async def test_near_duplicates_drop_below_different_posts_but_same_topic_posts_stay() -> None:
    catalog = catalog_of(
        own("original", unit(1, 0)),
        own("repost", unit(1, 0.01)),  # cos ~1 with the original
        own("same_topic", unit(1, 0.8)),  # cos ~0.78: related, not a copy
        own("other", unit(0, 1)),
        own("photo_copy", image=unit(1, dim=512)),
        own("photo", image=unit(1, 0.001, dim=512)),  # duplicates photo_copy in image space
        own("negative", unit(1, 0)),
    )
    candidates = await ranked(
        catalog,
        {
            "original": 1.0,
            "repost": 0.95,
            "same_topic": 0.9,
            "other": 0.6,
            "photo_copy": 0.5,
            "photo": 0.55,
            "negative": -0.2,
        },
    )
    out = NearDuplicateReranker(catalog, threshold=0.9, strength=0.9, window=10, ranker=RankerSlot()).rerank(
        query(), candidates
    )
    assert keys(catalog, out) == [
        "original",
        "same_topic",
        "other",
        "photo",
        "repost",
        "photo_copy",
        "negative",
    ]
    assert out.factors["novelty"][1] == 1.0
    assert out.factors["novelty"][4] == pytest.approx(0.1, abs=0.01)
    assert out.score[-1] == pytest.approx(-0.2)  # a penalty never lifts a negative score
    assert out.score.tolist() == sorted(out.score.tolist(), reverse=True)


async def test_near_duplicates_leave_candidates_beyond_the_window_alone() -> None:
    catalog = catalog_of(own("a", unit(1)), own("b", unit(0, 1)), own("copy", unit(1)))
    candidates = await ranked(catalog, {"a": 1.0, "b": 0.9, "copy": 0.8})
    out = NearDuplicateReranker(catalog, threshold=0.9, strength=0.9, window=2, ranker=RankerSlot()).rerank(
        query(), candidates
    )
    assert keys(catalog, out) == ["a", "b", "copy"]
    assert out.factors["novelty"][2] == 1.0 and out.score[2] == pytest.approx(0.8)  # untouched: neutral


def test_mmr_novelty_over_the_close_rows_equals_the_greedy_over_all() -> None:
    """The greedy over every row, written out: the reranker's runs over the close rows alone."""

    def greedy(similarity: np.ndarray, score: np.ndarray, threshold: float, strength: float) -> np.ndarray:
        similarity = similarity.copy()
        np.fill_diagonal(similarity, -1.0)
        novelty, closest, left = np.ones(len(score)), np.full(len(score), -1.0), np.ones(len(score), bool)
        for _ in range(len(score)):
            redundancy = np.clip((closest - threshold) / (1.0 - threshold), 0.0, 1.0)
            factor = np.where(score > 0, 1.0 - strength * redundancy, 1.0)
            i = int(np.argmax(np.where(left, score * factor, -np.inf)))
            left[i], closest, novelty[i] = False, np.maximum(closest, similarity[i]), factor[i]
        return novelty

    rng = np.random.default_rng(3)
    penalised = 0
    for _ in range(20):
        vectors = rng.standard_normal((60, 8))
        copies = rng.integers(0, 60, 15)
        vectors[rng.integers(0, 60, 15)] = vectors[copies] + 0.05 * rng.standard_normal((15, 8))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity, score = vectors @ vectors.T, rng.standard_normal(60)
        fast = mmr_novelty(similarity, score, 0.9, 0.8)
        assert np.array_equal(fast, greedy(similarity, score, 0.9, 0.8))
        penalised += int((fast < 1.0).any())
    assert penalised >= 15


async def test_near_duplicate_strength_comes_from_the_deployed_model_when_it_chose_one() -> None:
    catalog = catalog_of(own("a", unit(1)), own("copy", unit(1)), own("b", unit(0, 1)))
    scores = {"a": 1.0, "copy": 0.9, "b": 0.8}
    model = RankerModel(1, ("prerank",), 0.0, cast(Any, None), near_duplicate_strength=0.0)
    learned = NearDuplicateReranker(catalog, 0.9, 0.9, 10, RankerSlot(model))
    assert learned.strength() == 0.0
    assert keys(catalog, learned.rerank(query(), await ranked(catalog, scores))) == ["a", "copy", "b"]
    unchosen = RankerSlot(dataclasses.replace(model, near_duplicate_strength=None))
    configured = NearDuplicateReranker(catalog, 0.9, 0.9, 10, unchosen)
    assert configured.strength() == 0.9
    assert keys(catalog, configured.rerank(query(), await ranked(catalog, scores))) == ["a", "b", "copy"]


async def test_small_author_boost_fades_as_the_author_is_reached() -> None:
    catalog = catalog_of(record("new", "newcomer"), record("known", "star"))
    catalog.set_reach({"star": 950.0})
    candidates = await hydrated(catalog, ["new", "known"])
    SmallAuthorScorer(0.2, 50.0).score(query(), candidates)
    new, known = candidates.factors["small_author"].tolist()
    assert new == pytest.approx(1.2)
    assert known == pytest.approx(1.01)
    assert not SmallAuthorScorer(0.0, 50.0).enabled(query())


EXPLORATION_SCORES = {
    **{f"top{i}": 10.0 - i for i in range(6)},
    "shown_bad": 0.5,
    "fresh": 0.3,
    "established": 0.2,
}


def exploration_catalog() -> PostCatalog:
    catalog = catalog_of(*(own(k) for k in EXPLORATION_SCORES))
    catalog.set_impressions(
        {
            **{f"top{i}": 1000 for i in range(6)},  # well known
            "shown_bad": 150,  # 150 impressions, never engaged with
            # fresh: never shown
            "established": 5000,  # served too often to count as fresh
        }
    )
    catalog.set_counts({"established": {"like": 4000}})
    return catalog


async def explore(catalog: PostCatalog, seed: int) -> tuple[Candidates, str]:
    """The pool reranked with this seed, and the key in the exploration slot."""
    q = query(limit=5)
    out = ExplorationReranker(position=2, max_impressions=200, prior=(1.0, 1.0), seed=seed).rerank(
        q, await ranked(catalog, EXPLORATION_SCORES, q)
    )
    return out, catalog.keys[out.rows[2]]


async def test_exploration_slot_goes_to_an_unproven_post_by_thompson_sampling() -> None:
    catalog = exploration_catalog()
    wins: dict[str, int] = {}
    for seed in range(200):
        out, explored = await explore(catalog, seed)
        wins[explored] = wins.get(explored, 0) + 1
        assert out.score[2] == pytest.approx(8.0)  # the score of the post it displaced
        assert out.score.tolist() == sorted(out.score.tolist(), reverse=True)
        assert len(out) == 9 and keys(catalog, out)[:2] == ["top0", "top1"]
        lifted = np.flatnonzero(out.factors["exploration"] != 1.0).tolist()
        assert lifted == [2] and out.factors["exploration"][2] > 1.0  # only the winner's factor moves
    assert "established" not in wins and "top0" not in wins
    assert wins["fresh"] > 100  # Beta(1, 1) beats Beta(1, 151) almost always
    assert wins.get("shown_bad", 0) < 10
    again, _ = await explore(catalog, 7)
    assert keys(catalog, again) == keys(catalog, (await explore(catalog, 7))[0])  # reproducible with a seed
    reranker = ExplorationReranker(5, 200, (1.0, 1.0), None)
    assert not reranker.enabled(query(limit=5, user=user()))  # the page ends before the slot
    assert reranker.enabled(query(limit=10, user=user()))
    assert not reranker.enabled(query(limit=10))  # a user with no interaction yet: no exploration


async def test_an_engaged_with_post_keeps_winning_exploration() -> None:
    catalog = exploration_catalog()
    catalog.set_counts({"shown_bad": {"like": 120, "share": 20}})  # shown_bad turns out to be loved
    wins = 0
    for s in range(100):
        wins += (await explore(catalog, s))[1] == "shown_bad"
    assert wins > 60


async def test_a_winner_scored_near_zero_gets_a_finite_lift() -> None:
    scores = {**{f"top{i}": 10.0 - i for i in range(6)}, "fresh": 1e-320}  # 10 / 1e-320 overflows
    catalog = catalog_of(*(own(k) for k in scores))
    catalog.set_impressions({f"top{i}": 1000 for i in range(6)})
    q = query(limit=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ExplorationReranker(2, 200, (1.0, 1.0), seed=0).rerank(q, await ranked(catalog, scores, q))
    assert keys(catalog, out)[2] == "fresh"
    assert np.isfinite(out.score).all() and np.isfinite(out.factors["exploration"]).all()


class _Source:
    def __init__(
        self,
        catalog: PostCatalog,
        name: str,
        keys_: list[str],
        delay: float = 0.0,
        fail: bool = False,
        applies: bool = True,
    ) -> None:
        self._catalog = catalog
        self.name, self._keys, self._delay, self._fail, self._applies = name, keys_, delay, fail, applies

    def enabled(self, q: FeedQuery) -> bool:
        return self._applies

    async def fetch(self, q: FeedQuery) -> Candidates:
        await asyncio.sleep(self._delay)
        if self._fail:
            raise RuntimeError("boom")
        return batch(self._catalog, self._keys, self.name)


class _BrokenFilter:
    name = "broken"

    def enabled(self, q: FeedQuery) -> bool:
        return True

    def apply(self, q: FeedQuery, c: Candidates) -> np.ndarray:
        raise ValueError("bad filter")


async def test_runner_skips_failing_slow_and_disabled_components() -> None:
    catalog = catalog_of(*(record(k) for k in "123456"))
    pipeline = Pipeline(
        catalog=catalog,
        sources=[
            _Source(catalog, "good", ["1", "2"]),
            _Source(catalog, "failing", ["3"], fail=True),
            _Source(catalog, "slow", ["4"], delay=10.0),
            _Source(catalog, "off", ["5"]),
            _Source(catalog, "not_applicable", ["6"], applies=False),
        ],
        candidate_hydrators=[PostFeaturesHydrator(catalog)],  # the freshness scorer needs `created_at`
        filters=[_BrokenFilter(), DuplicateFilter()],
        scorers=[FreshnessScorer(3600)],
        disabled=frozenset({"off"}),
        source_timeout_s=0.2,
    )
    start = time.perf_counter()
    result = await pipeline.run(query(limit=1))
    assert time.perf_counter() - start < 5.0  # the slow source was cut off at its timeout
    status = {r.name: r.status for r in result.stages}
    assert status == {
        "good": "ok",
        "failing": "failed",
        "slow": "timeout",
        "off": "disabled",
        "not_applicable": "skipped",
        "post_features": "ok",
        "broken": "failed",
        "duplicates": "ok",
        "freshness": "ok",
    }
    assert len(result.items) == 1 and result.items[0].post_key in {"1", "2"}
    counts = {r.name: (r.count_in, r.count_out) for r in result.stages}
    assert counts["good"] == (0, 2)


async def test_candidate_score_is_sum_of_parts_times_factors() -> None:
    c = Candidates.of(np.array([NO_ROW, NO_ROW]), "x")
    c.parts = {"a": np.array([0.5, 1.0]), "b": np.array([0.25, 0.0])}
    c.factors = {"f": np.array([0.5, 1.0]), "g": np.array([2.0, 3.0])}
    assert c.rescore().tolist() == pytest.approx([0.75, 3.0])
    assert c.score.tolist() == pytest.approx([0.75, 3.0])
