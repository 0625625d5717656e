"""Ranking regression test: a small MovieLens replay (60 users, shipped in tests/data) through the
whole engine with its shipped defaults, the batch models (CF and the learned ranker) retrained
after the history as an operator would. It fails when learning from the deployment's data breaks:
the learned ranker must be trained and deployed (it validated better than the hand-set formula),
and its feeds must score well above the formula's on the same replay.

The issue's targets for users with history (1.3x popularity, 1.0x ALS) are not met yet on this
sample (14 evaluated users; its ranker trains on about 150 groups and validates on 4); the
figures are printed, and docs/evaluation.md gives the full evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feed.evaluate import baselines, movielens
from feed.evaluate.metrics import score
from feed.evaluate.replay import replay
from tests.conftest import Engine

DATA = Path(__file__).parent / "data" / "movielens-60"


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    """The engine with its shipped defaults, as the evaluation runs it."""
    import os

    from feed.config import RankingConfig, Settings

    return Settings(  # a replay sends each user's history within seconds: no write limits
        redis_url=os.environ["REDIS_URL"],
        data_dir=tmp_path,
        backend_url=None,
        write_limit_per_key=0,
        write_limit_per_user=0,
        ranking=RankingConfig(exploration_seed=0),  # the same exploration on every run
    )


@pytest.mark.timeout(420)
async def test_the_learned_ranker_is_deployed_and_ranks_movielens_far_above_the_formula(
    engine: Engine,
) -> None:
    import asyncio

    import redis

    from feed.batch.retrain import retrain as retrain_models
    from feed.evaluate.replay import ask_feeds
    from feed.stores import keys

    split = movielens.load(DATA)
    assert len(split.users) == 14  # the same split as `python -m feed.evaluate movielens --users 60`

    async def idle(events: int) -> bool:
        return int(await engine.redis.get(keys.APPLIED_EVENTS) or 0) >= events

    trained: dict[str, Any] = {}
    systems: dict[str, dict[int, list[int]]] = {}

    async def retrain() -> None:
        systems["formula"] = await ask_feeds(engine.client, split.users)  # before any batch model
        r = redis.Redis.from_url(engine.settings.redis_url)
        trained.update(await asyncio.to_thread(retrain_models, r, engine.settings))
        r.close()
        await asyncio.sleep(3.0)  # the API loads a deployed model within its 2 s poll

    systems["engine"], _ = await replay(engine.client, split, idle, retrain=retrain)
    systems["popularity"] = baselines.popularity(split)
    systems["als"] = baselines.als(split, 0)
    genres, groups = split.genres(), split.groups()
    ndcg = {
        (name, group): score(lists, truth, genres, len(split.catalogue)).ndcg_10
        for name, lists in systems.items()
        for group, truth in groups.items()
    }
    print({f"{name} {group}": round(v, 4) for (name, group), v in ndcg.items()})
    report = trained["ranker"]
    assert report is not None and report["deployed"], report
    assert report["ndcg_at_10"]["new"] > report["ndcg_at_10"]["formula"]
    assert ndcg["engine", "all"] >= 2.0 * ndcg["formula", "all"], ndcg
    assert ndcg["engine", "all"] >= 0.5 * ndcg["popularity", "all"], ndcg
