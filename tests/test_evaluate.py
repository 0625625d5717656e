"""The offline evaluation: MovieLens and CiaoDVD conversion and split, metrics, baselines, the host's
social-graph server, the report, and the replay through the engine's HTTP API (on small synthetic
data sets in each one's format)."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from feed.evaluate import baselines, ciaodvd, dataset, metrics, movielens
from feed.evaluate.__main__ import engine_env, overrides
from feed.evaluate.dataset import Movie, Rating, Split
from feed.evaluate.host import GraphHost
from feed.evaluate.replay import replay
from feed.evaluate.report import build_report, table
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
def split(tmp_path: Path) -> Split:
    return movielens.load(write_dataset(tmp_path / "ml"), train_fraction=0.8)


def test_ratings_become_actions_and_the_split_is_by_time(split: Split) -> None:
    assert [dataset.action_for(r) for r in (5.0, 4.0, 3.5, 2.5, 2.0)] == [
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


def test_baselines_rank_unseen_items(split: Split) -> None:
    seen = split.seen()
    for lists in (baselines.popularity(split, k=5), baselines.als(split, seed=0, k=5)):
        assert set(lists) == set(split.users)
        for user, ranked in lists.items():
            assert len(ranked) == len(set(ranked)) <= 5
            assert not set(ranked) & seen.get(user, set())
            assert set(ranked) <= set(split.catalogue)
    assert baselines.als(split, seed=0) == baselines.als(split, seed=0)  # deterministic with a seed


async def test_replay_through_the_api_gives_every_user_a_feed(engine: Engine, split: Split) -> None:
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


CIAO_RATINGS = [  # user, movie, genre, review, rating, date; (1, 10) is rated twice
    (1, 10, 1, 1, 5, "2010-01-01"),
    (2, 10, 1, 2, 4, "2010-01-01"),
    (3, 11, 2, 3, 3, "2010-01-01"),
    (1, 11, 2, 4, 2, "2010-01-02"),
    (2, 12, 3, 5, 1, "2010-01-02"),
    (1, 10, 1, 6, 4, "2010-01-03"),
    (3, 10, 1, 7, 5, "2010-01-03"),
    (4, 12, 3, 8, 4, "2010-01-04"),
    (3, 12, 3, 9, 5, "2010-01-05"),  # after the split: user 3 (with history) and 5 (new) like
    (5, 13, 1, 10, 5, "2010-01-05"),
]
CIAO_TRUSTS = [(3, 1), (3, 2), (5, 3), (1, 3), (7, 8)]


def write_ciaodvd(folder: Path) -> Path:
    """Ten ratings over five days in CiaoDVD's format, with a trust graph and the genre names."""
    folder.mkdir()
    with (folder / "movie-ratings.txt").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(CIAO_RATINGS)
    with (folder / "trusts.txt").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows((a, b, 1) for a, b in CIAO_TRUSTS)
    (folder / "genres.tsv").write_text("genreID\tname\n1\tComedy\n2\tHorror\n3\tDrama\n")
    return folder


@pytest.fixture
def ciao(tmp_path: Path) -> Split:
    return ciaodvd.load(write_ciaodvd(tmp_path / "ciaodvd"))


def test_ciaodvd_ratings_become_timed_actions_split_by_time_with_the_trust_graph(
    ciao: Split, tmp_path: Path
) -> None:
    day = datetime(2010, 1, 1, tzinfo=UTC).timestamp()
    # a day's ratings are ranked in file order, one second apart; the repeated pair stays two events
    assert [(r.user_id, r.movie_id, r.ts - day, r.action) for r in ciao.train] == [
        (1, 10, 0, "like"),
        (2, 10, 1, "like"),
        (3, 11, 2, "view"),
        (1, 11, 86_400, "not_interested"),
        (2, 12, 86_401, "not_interested"),
        (1, 10, 2 * 86_400, "like"),
        (3, 10, 2 * 86_400 + 1, "like"),
        (4, 12, 3 * 86_400, "like"),
    ]
    assert ciao.split_ts == day + 4 * 86_400
    assert ciao.truth == {3: {12}, 5: {13}}
    assert ciao.catalogue == {
        10: Movie(10, "A film. Genre: Comedy.", frozenset({"Comedy"}), day),
        11: Movie(11, "A film. Genre: Horror.", frozenset({"Horror"}), day + 2),
        12: Movie(12, "A film. Genre: Drama.", frozenset({"Drama"}), day + 86_401),
    }
    assert ciao.following == {3: {1, 2}, 5: {3}, 1: {3}, 7: {8}}
    assert ciaodvd.load(tmp_path / "ciaodvd") == ciao  # deterministic
    sample = ciaodvd.load(tmp_path / "ciaodvd", users=3, seed=1)
    raters = {r.user_id for r in sample.train} | set(sample.truth)
    assert len(raters) <= 3 and all(u in raters and f <= raters for u, f in sample.following.items())


def test_groups_split_users_by_history(ciao: Split) -> None:
    assert ciao.groups() == {"all": {3: {12}, 5: {13}}, "with_history": {3: {12}}, "new": {5: {13}}}


def test_friends_popularity_ranks_followees_likes_then_popularity_never_seen_items() -> None:
    def rating(user: int, movie: int, stars: float) -> Rating:
        return Rating(user, movie, stars, 0.0)

    liked = [(10, 1), (11, 1), (12, 1), (10, 2), (11, 2), (12, 3)]  # popularity: 1, then 2 and 3
    liked += [(20, 3), (20, 4), (20, 5), (21, 5), (21, 6)]  # 20 and 21: the followees
    train = [rating(u, m, 5) for u, m in liked] + [rating(20, 2, 3), rating(1, 6, 3)]
    split = Split(
        split_ts=1.0,
        catalogue={m: Movie(m, f"movie {m}", frozenset(), 0.0) for m in range(1, 7)},
        train=train,
        truth={1: {1}, 2: {1}},
        following={1: {20, 21}},
    )
    lists = baselines.friends_popularity(split)
    # 5: two followees; 3 and 4: one each (3 more popular); then 1 and 2 by popularity; 6 was seen
    assert lists[1] == [5, 3, 4, 1, 2]
    assert lists[2] == baselines.popularity(split)[2] == [1, 2, 3, 5, 4, 6]  # follows no one
    assert baselines.friends_popularity(split, k=2)[1] == [5, 3]


async def test_the_host_serves_the_follow_graph_in_the_callback_format(redis_client: Any) -> None:
    from feed.social_graph import SocialGraphClient
    from feed.stores.social_graphs import SocialGraphCache

    with GraphHost({3: {2, 1}}) as host:
        async with httpx.AsyncClient(base_url=host.url) as http:
            answer = await http.get("/internal/social-graph/3/")
            assert answer.status_code == 200
            assert answer.json() == {"following": [1, 2], "blocked": []}
            assert (await http.get("/internal/social-graph/4/")).json() == {"following": [], "blocked": []}
            assert (await http.get("/elsewhere")).status_code == 404
            graph = await SocialGraphClient(SocialGraphCache(redis_client), http, host.url).get(3)
    assert graph.origin == "host" and graph.following == {"1", "2"}


def test_overrides_are_only_what_was_changed() -> None:
    assert overrides({}, []) == {} and engine_env({}, "http://h") == {"BACKEND_URL": "http://h"}
    changed = overrides({"trending_weight": 2.0}, ["phoenix"])
    assert changed == {"ranking": {"trending_weight": 2.0}, "disabled": ["phoenix"]}
    assert engine_env(changed, "http://h") == {
        "BACKEND_URL": "http://h",
        "RANKING": '{"trending_weight": 2.0}',
        "DISABLED_COMPONENTS": '["phoenix"]',
    }


def test_the_report_scores_every_system_per_group(ciao: Split) -> None:
    lists: dict[str, dict[int, list[int]]] = {
        "engine": {3: [12, 11], 5: [10]},
        "popularity": {3: [11], 5: [10]},
        "als": {3: [], 5: []},
        "friends_popularity": {3: [12], 5: [12]},
    }
    report = build_report(
        "ciaodvd", ciao, lists, overrides={}, seed=0, users_sampled=None, seconds={"total": 1.0}
    )
    assert json.loads(json.dumps(report)) == report
    assert report["dataset"] == "ciaodvd" and report["overrides"] == {}
    assert report["sizes"] == {"posts": 3, "history_events": 8, "evaluated_users": 2, "follow_arcs": 5}
    assert {"seed", "users_sampled", "seconds", "machine"} <= set(report)
    systems = report["systems"]
    assert list(systems) == ["engine", "popularity", "als", "friends_popularity"]
    for groups in systems.values():
        assert list(groups) == ["all", "with_history", "new"]
        assert [g["users"] for g in groups.values()] == [2, 1, 1]
        assert {"ndcg@10", "recall@20", "hit_rate@10", "coverage", "genre_diversity"} <= set(groups["all"])
    assert systems["engine"]["all"]["ndcg@10"] == 0.5 and systems["engine"]["with_history"]["ndcg@10"] == 1.0
    assert systems["friends_popularity"]["new"]["recall@20"] == 0.0
    assert "| engine | with_history (1) | 1.0000 |" in table(systems)
