"""The offline evaluation: MovieLens conversion and split, metrics, baselines, and the replay
through the engine's HTTP API (on a small synthetic data set in MovieLens' format)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

from feed.evaluate import baselines, metrics, movielens
from feed.evaluate.replay import replay
from tests.conftest import Engine

DAY = 86_400.0


def write_dataset(folder: Path) -> Path:
    """Two taste groups (comedy fans, horror fans) rating over 10 days, plus two late newcomers."""
    folder.mkdir()
    movies = [(i, f"Comedy {i} (2001)", "Comedy") for i in range(1, 9)]
    movies += [(i, f"Horror {i} (2002)", "Horror|Thriller") for i in range(11, 19)]
    with (folder / "movies.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("movieId", "title", "genres"), *movies])
    ratings = []
    for user in range(1, 7):
        fan_of = range(1, 9) if user <= 3 else range(11, 19)
        other = range(11, 19) if user <= 3 else range(1, 9)
        for k, movie in enumerate(fan_of):
            ratings.append((user, movie, 4.5, 1000 + DAY * k + user))
        ratings.append((user, other[0], 1.0, 1000 + DAY * 8 + user))
    ratings += [(7, 1, 5.0, 1000 + DAY * 9.5), (7, 2, 4.0, 1000 + DAY * 9.6), (8, 11, 2.0, 1000 + DAY * 9.7)]
    with (folder / "ratings.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("userId", "movieId", "rating", "timestamp"), *ratings])
    with (folder / "tags.csv").open("w", newline="") as f:
        csv.writer(f).writerows(
            [("userId", "movieId", "tag", "timestamp"), (1, 1, "Slapstick", 1001), (1, 2, "late", 10**10)]
        )
    return folder


@pytest.fixture
def split(tmp_path: Path) -> movielens.Split:
    return movielens.load(write_dataset(tmp_path / "ml"), train_fraction=0.8)


def test_ratings_become_actions_and_the_split_is_by_time(split: movielens.Split) -> None:
    assert [movielens.action_for(r) for r in (5.0, 4.0, 3.5, 2.5, 2.0)] == [
        "like",
        "like",
        "view",
        "view",
        "not_interested",
    ]
    assert all(r.ts < split.split_ts for r in split.train)
    assert len(split.train) == int(57 * 0.8)
    # users are scored on what they liked after the split; the catalogue is what was rated before it
    assert split.truth and all(split.truth.values())
    assert set(split.catalogue) >= {m for r in split.train for m in [r.movie_id]}
    first = split.catalogue[1]
    assert first.text == "Comedy 1 (2001). Genres: Comedy. Tags: slapstick." and first.genres == {"Comedy"}
    assert first.created_at == min(
        r.ts for r in split.train if r.movie_id == 1
    )  # tags after the split are left out


def test_metrics_on_known_lists() -> None:
    assert metrics.ndcg_at([1, 2, 3], {1}, 10) == 1.0
    assert metrics.ndcg_at([9, 1], {1, 2}, 10) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert metrics.recall_at([1, 2, 3], {1, 4}, 2) == 0.5
    assert metrics.hit_at([5, 6], {6}, 1) == 0.0 and metrics.hit_at([5, 6], {6}, 2) == 1.0
    genres = {1: frozenset({"A"}), 2: frozenset({"A"}), 3: frozenset({"B"})}
    assert metrics.genre_diversity([1, 2], genres, 10) == 0.0
    assert metrics.genre_diversity([1, 3], genres, 10) == 1.0
    s = metrics.score({1: [1, 2], 2: [3]}, {1: {1}, 2: {9}}, genres, catalogue_size=4)
    assert (s.users, s.hit_10, s.coverage) == (2, 0.5, 0.75)


def test_baselines_rank_unseen_items(split: movielens.Split) -> None:
    seen = split.seen()
    for lists in (baselines.popularity(split, k=5), baselines.als(split, seed=0, k=5)):
        assert set(lists) == set(split.users)
        for user, ranked in lists.items():
            assert len(ranked) == len(set(ranked)) <= 5
            assert not set(ranked) & seen.get(user, set())
            assert set(ranked) <= set(split.catalogue)
    assert baselines.als(split, seed=0) == baselines.als(split, seed=0)  # deterministic with a seed


async def test_replay_through_the_api_gives_every_user_a_feed(engine: Engine, split: movielens.Split) -> None:
    from feed.stores import keys

    async def idle(events: int) -> bool:
        applied = int(await engine.redis.get(keys.APPLIED_EVENTS) or 0)
        return applied >= events

    retrained = []

    async def retrain() -> None:
        retrained.append(True)

    feeds, timings = await replay(engine.client, split, idle, retrain=retrain, limit=5, concurrency=4)
    assert set(feeds) == set(split.users) and set(timings) == {"posts", "events", "retrain", "feeds"}
    assert retrained == [True]
    seen = split.seen()
    for user, ranked in feeds.items():
        assert ranked and not set(ranked) & seen.get(user, set())
        assert set(ranked) <= set(split.catalogue)
    assert int(await engine.redis.get(keys.APPLIED_EVENTS)) == len(split.train)
    liked: Any = await engine.redis.zrange(keys.user_seen("1"), 0, -1)
    assert {int(m) for m in liked} == {r.movie_id for r in split.train if r.user_id == 1}
