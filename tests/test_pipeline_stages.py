"""Each pipeline component alone, on plain data, and the runner's contract."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from feed.config import RankingConfig
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
from feed.pipeline.framework import Candidate, FeedQuery, Pipeline
from feed.pipeline.rerankers import AuthorDiversityReranker, ExplorationReranker, NearDuplicateReranker
from feed.pipeline.scorers import (
    AuthorAffinityScorer,
    EngagementScorer,
    FreshnessScorer,
    NetworkScorer,
    SimilarityScorer,
    SmallAuthorScorer,
)
from feed.social_graph import SocialGraph
from feed.stores.feature_store import UserFeatures
from feed.stores.records import PostRecord
from tests.helpers import unit

NOW = 1_800_000_000.0


def record(key: str, author: str, age_s: float = 0.0, vector: np.ndarray | None = None) -> PostRecord:
    return PostRecord(
        key=key,
        post_id=key,
        author_id=author,
        author_key=author,
        created_at=NOW - age_s,
        post_type="text",
        text="",
        vectors={"text": unit(1) if vector is None else vector},
    )


def cand(
    key: str, author: str = "a", source: str = "phoenix", age_s: float = 0.0, vector: np.ndarray | None = None
) -> Candidate:
    return Candidate(key, source, record=record(key, author, age_s, vector))


def query(**kw: object) -> FeedQuery:
    q = FeedQuery(user_id=1, user_key="1", limit=10, cursor="c", now=NOW)
    for k, v in kw.items():
        setattr(q, k, v)
    return q


def user(vector: np.ndarray | None = None, seen: frozenset[str] = frozenset(), **aff: float) -> UserFeatures:
    return UserFeatures(
        vectors={} if vector is None else {"text": vector}, events=1, seen=seen, affinity=dict(aff)
    )


def keys(cands: list[Candidate]) -> list[str]:
    return [c.post_key for c in cands]


def test_duplicate_filter_keeps_first_source() -> None:
    out = DuplicateFilter().apply(query(), [cand("1", source="thunder"), cand("1"), cand("2")])
    assert keys(out) == ["1", "2"] and out[0].source == "thunder"


def test_missing_post_filter_drops_deleted() -> None:
    assert keys(MissingPostFilter().apply(query(), [Candidate("x", "fresh"), cand("2")])) == ["2"]


def test_own_posts_filter() -> None:
    assert keys(OwnPostFilter().apply(query(), [cand("1", author="1"), cand("2", author="9")])) == ["2"]


def test_blocked_and_muted_authors_filter() -> None:
    q = query(graph=SocialGraph(blocked=frozenset({"b"}), muted=frozenset({"m"})))
    f = BlockedAuthorFilter()
    assert f.enabled(q)
    assert keys(f.apply(q, [cand("1", "b"), cand("2", "m"), cand("3", "ok")])) == ["3"]
    assert not f.enabled(query())


def test_seen_and_served_filters() -> None:
    q = query(user=user(seen=frozenset({"1"})), served=frozenset({"2"}))
    cands = [cand("1"), cand("2"), cand("3")]
    assert keys(SeenFilter().apply(q, cands)) == ["2", "3"]
    assert keys(ServedFilter().apply(q, cands)) == ["1", "3"]


def test_muted_keywords_drop_posts_mentioning_them_as_whole_words() -> None:
    import dataclasses

    def post(key: str, text: str = "", transcript: str = "", tags: dict[str, int] | None = None) -> Candidate:
        c = cand(key)
        c.record = dataclasses.replace(c.record, text=text, transcript=transcript, tags=tags or {})  # type: ignore[type-var]
        return c

    candidates = [
        post("title", "Season finale SPOILER inside"),
        post("plural", "no spoilers here"),
        post("speech", transcript="the world cup final was great"),
        post("photo", tags={"dog": 2}),
        post("clean", "a quiet walk"),
    ]
    graph = SocialGraph(muted_keywords=frozenset({"spoiler", "world cup", "dog"}))
    out = MutedKeywordFilter().apply(query(graph=graph), candidates)
    assert keys(out) == ["plural", "clean"]
    assert not MutedKeywordFilter().enabled(query())


def test_hidden_author_filter() -> None:
    hiding = UserFeatures(
        vectors={}, events=2, seen=frozenset(), affinity={}, hidden_authors=frozenset({"troll"})
    )
    out = HiddenAuthorFilter().apply(query(user=hiding), [cand("1", "troll"), cand("2", "friend")])
    assert keys(out) == ["2"]


def test_max_age_filter() -> None:
    out = MaxAgeFilter(3600).apply(query(), [cand("old", age_s=7200), cand("new", age_s=10)])
    assert keys(out) == ["new"]


def test_similarity_scorer_prefers_closer_posts_and_is_neutral_for_cold_users() -> None:
    near, far = cand("near", vector=unit(1, 0.1)), cand("far", vector=unit(-1, 1))
    scorer = SimilarityScorer(1.0, {"text": 1.0, "image": 1.0}, 0.5)
    scorer.score(query(user=user(vector=unit(1))), [near, far])
    assert near.parts["similarity"] > far.parts["similarity"]
    cold = [cand("x", vector=unit(1)), cand("y", vector=unit(0, 1))]
    SimilarityScorer(1.0, {"text": 1.0, "image": 1.0}, 0.5).score(query(), cold)
    assert cold[0].parts["similarity"] == cold[1].parts["similarity"] == pytest.approx(0.5)


def test_similarity_averages_the_spaces_user_and_post_share() -> None:
    dog = unit(1, dim=512)
    photo = Candidate("photo", "phoenix", record=record("photo", "a", 0.0, None))
    photo.record.vectors.clear()  # type: ignore[union-attr]
    photo.record.vectors["image"] = dog  # type: ignore[union-attr]
    both = cand("both", vector=unit(1))
    both.record.vectors["image"] = unit(0, 1, dim=512)  # type: ignore[union-attr]
    text_only = cand("text_only", vector=unit(1))
    q = query(
        user=UserFeatures(vectors={"text": unit(1), "image": dog}, events=3, seen=frozenset(), affinity={})
    )
    SimilarityScorer(1.0, {"text": 1.0, "image": 1.0}, 0.5).score(q, [photo, both, text_only])
    assert photo.parts["similarity"] == pytest.approx(1.0)  # image only: cos 1
    assert both.parts["similarity"] == pytest.approx(0.75)  # mean of cos 1 (text) and 0 (image)
    assert text_only.parts["similarity"] == pytest.approx(1.0)
    SimilarityScorer(1.0, {"text": 1.0, "image": 0.0}, 0.5).score(q, [photo, both])
    assert photo.parts["similarity"] == pytest.approx(0.5)  # image space switched off: neutral
    assert both.parts["similarity"] == pytest.approx(1.0)


def test_similarity_mixes_long_and_short_term_interests() -> None:
    sports, cooking = cand("sports", vector=unit(1, 0)), cand("cooking", vector=unit(0, 1))
    drifting = UserFeatures(
        vectors={"text": unit(1, 0)},
        events=9,
        seen=frozenset(),
        affinity={},
        short_vectors={"text": unit(0, 1)},
    )
    SimilarityScorer(1.0, {"text": 1.0}, 0.75).score(query(user=drifting), [sports, cooking])
    assert sports.parts["similarity"] == pytest.approx((1 + 0.25) / 2)
    assert cooking.parts["similarity"] == pytest.approx((1 + 0.75) / 2)
    only_short = UserFeatures(
        vectors={}, events=1, seen=frozenset(), affinity={}, short_vectors={"text": unit(0, 1)}
    )
    SimilarityScorer(1.0, {"text": 1.0}, 0.75).score(query(user=only_short), [sports, cooking])
    assert cooking.parts["similarity"] == pytest.approx(1.0)


def test_engagement_scorer_weighs_negative_actions_heavily() -> None:
    liked, reported = cand("l"), cand("r")
    liked.counts = {"like": 3}
    reported.counts = {"like": 3, "report": 2}
    EngagementScorer(RankingConfig()).score(query(), [liked, reported])
    assert liked.parts["engagement"] > 0 > reported.parts["engagement"]


def test_affinity_scorer() -> None:
    fav, other = cand("1", "fav"), cand("2", "x")
    AuthorAffinityScorer(0.3).score(query(user=user(fav=5.0)), [fav, other])
    assert fav.parts["affinity"] > other.parts["affinity"] == 0.0


def test_freshness_halves_per_half_life() -> None:
    new, old = cand("n", age_s=0), cand("o", age_s=3600)
    FreshnessScorer(3600).score(query(), [new, old])
    assert new.factors["freshness"] == pytest.approx(1.0)
    assert old.factors["freshness"] == pytest.approx(0.5)


def test_network_scorer() -> None:
    inn, out = cand("1"), cand("2")
    inn.in_network = True
    NetworkScorer(1.0, 0.5).score(query(), [inn, out])
    assert (inn.factors["network"], out.factors["network"]) == (1.0, 0.5)


def test_author_diversity_decays_repeated_authors() -> None:
    cands = [cand("a1", "a"), cand("a2", "a"), cand("b1", "b")]
    for c, s in zip(cands, [1.0, 0.9, 0.8], strict=True):
        c.parts["s"] = s
        c.rescore()
    out = AuthorDiversityReranker(0.5).rerank(query(), cands)
    assert keys(out) == ["a1", "b1", "a2"]
    assert out[2].factors["author_diversity"] == 0.5


def scored(
    key: str, score: float, text: np.ndarray | None = None, image: np.ndarray | None = None
) -> Candidate:
    c = cand(key, author=key, vector=text)
    if image is not None:
        c.record.vectors.clear()  # type: ignore[union-attr]
        c.record.vectors["image"] = image  # type: ignore[union-attr]
    c.parts["s"] = score
    c.rescore()
    return c


def test_near_duplicates_drop_below_different_posts_but_same_topic_posts_stay() -> None:
    cands = [
        scored("original", 1.0, unit(1, 0)),
        scored("repost", 0.95, unit(1, 0.01)),  # cos ~1 with the original
        scored("same_topic", 0.9, unit(1, 0.8)),  # cos ~0.78: related, not a copy
        scored("other", 0.6, unit(0, 1)),
        scored("photo_copy", 0.5, None, image=unit(1, dim=512)),
        scored("photo", 0.55, None, image=unit(1, 0.001, dim=512)),  # duplicates photo_copy in image space
        scored("negative", -0.2, unit(1, 0)),
    ]
    out = NearDuplicateReranker(threshold=0.9, strength=0.9, window=10).rerank(query(), cands)
    assert keys(out) == ["original", "same_topic", "other", "photo", "repost", "photo_copy", "negative"]
    assert out[1].factors["novelty"] == 1.0
    assert out[4].factors["novelty"] == pytest.approx(0.1, abs=0.01)
    assert out[-1].score == pytest.approx(-0.2)  # a penalty never lifts a negative score
    assert [c.score for c in out] == sorted((c.score for c in out), reverse=True)


def test_near_duplicates_leave_candidates_beyond_the_window_alone() -> None:
    cands = [scored("a", 1.0, unit(1)), scored("b", 0.9, unit(0, 1)), scored("copy", 0.8, unit(1))]
    out = NearDuplicateReranker(threshold=0.9, strength=0.9, window=2).rerank(query(), cands)
    assert keys(out) == ["a", "b", "copy"] and "novelty" not in out[2].factors


def test_small_author_boost_fades_as_the_author_is_reached() -> None:
    new, known = cand("new"), cand("known")
    known.author_reach = 950.0
    SmallAuthorScorer(0.2, 50.0).score(query(), [new, known])
    assert new.factors["small_author"] == pytest.approx(1.2)
    assert known.factors["small_author"] == pytest.approx(1.01)
    assert not SmallAuthorScorer(0.0, 50.0).enabled(query())


def exploration_pool() -> list[Candidate]:
    cands = [scored(f"top{i}", 10.0 - i) for i in range(6)]
    for c in cands:
        c.impressions = 1000  # well known
    shown_bad = scored("shown_bad", 0.5)  # 150 impressions, never engaged with
    shown_bad.impressions = 150
    fresh = scored("fresh", 0.3)  # never shown
    established = scored("established", 0.2)  # served too often to count as fresh
    established.impressions = 5000
    established.counts = {"like": 4000}
    return [*cands, shown_bad, fresh, established]


def test_exploration_slot_goes_to_an_unproven_post_by_thompson_sampling() -> None:
    wins: dict[str, int] = {}
    for seed in range(200):
        reranker = ExplorationReranker(position=2, max_impressions=200, prior=(1.0, 1.0), seed=seed)
        out = reranker.rerank(query(limit=5), exploration_pool())
        explored = out[2]
        wins[explored.post_key] = wins.get(explored.post_key, 0) + 1
        assert explored.score == pytest.approx(8.0)  # the score of the post it displaced
        assert [c.score for c in out] == sorted((c.score for c in out), reverse=True)
        assert len(out) == 9 and keys(out)[:2] == ["top0", "top1"]
    assert "established" not in wins and "top0" not in wins
    assert wins["fresh"] > 100  # Beta(1, 1) beats Beta(1, 151) almost always
    assert wins.get("shown_bad", 0) < 10
    again = ExplorationReranker(2, 200, (1.0, 1.0), seed=7)
    assert keys(again.rerank(query(limit=5), exploration_pool())) == keys(
        ExplorationReranker(2, 200, (1.0, 1.0), seed=7).rerank(query(limit=5), exploration_pool())
    )  # reproducible with a seed
    assert not ExplorationReranker(5, 200, (1.0, 1.0), None).enabled(query(limit=5))


def test_an_engaged_with_post_keeps_winning_exploration() -> None:
    pool = exploration_pool()
    pool[6].counts = {"like": 120, "share": 20}  # shown_bad turns out to be loved
    wins = sum(
        ExplorationReranker(2, 200, (1.0, 1.0), seed=s).rerank(query(limit=5), list(pool))[2].post_key
        == "shown_bad"
        for s in range(100)
    )
    assert wins > 60


class _Source:
    def __init__(
        self, name: str, keys_: list[str], delay: float = 0.0, fail: bool = False, applies: bool = True
    ) -> None:
        self.name, self._keys, self._delay, self._fail, self._applies = name, keys_, delay, fail, applies

    def enabled(self, q: FeedQuery) -> bool:
        return self._applies

    async def fetch(self, q: FeedQuery) -> list[Candidate]:
        await asyncio.sleep(self._delay)
        if self._fail:
            raise RuntimeError("boom")
        return [cand(k) for k in self._keys]


class _BrokenFilter:
    name = "broken"

    def enabled(self, q: FeedQuery) -> bool:
        return True

    def apply(self, q: FeedQuery, c: list[Candidate]) -> list[Candidate]:
        raise ValueError("bad filter")


async def test_runner_skips_failing_slow_and_disabled_components() -> None:
    pipeline = Pipeline(
        sources=[
            _Source("good", ["1", "2"]),
            _Source("failing", ["3"], fail=True),
            _Source("slow", ["4"], delay=10.0),
            _Source("off", ["5"]),
            _Source("not_applicable", ["6"], applies=False),
        ],
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
        "broken": "failed",
        "duplicates": "ok",
        "freshness": "ok",
    }
    assert len(result.items) == 1 and result.items[0].post_key in {"1", "2"}
    counts = {r.name: (r.count_in, r.count_out) for r in result.stages}
    assert counts["good"] == (0, 2)


async def test_candidate_score_is_sum_of_parts_times_factors() -> None:
    c = Candidate("1", "x", parts={"a": 0.5, "b": 0.25}, factors={"f": 0.5, "g": 2.0})
    assert c.rescore() == pytest.approx(0.75)
