"""Ranking regression test: a small MovieLens replay (60 users, shipped in tests/data) through the
whole engine with its shipped defaults, the batch models (CF and the learned ranker) retrained
after the history as an operator would. It fails when personalisation breaks: users with history
must get at least 1.3x popularity's NDCG@10 and at least ALS's, and all users at least
popularity's."""

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

    from feed.config import Settings

    return Settings(  # a replay sends each user's history within seconds: no write limits
        redis_url=os.environ["REDIS_URL"],
        data_dir=tmp_path,
        backend_url=None,
        write_limit_per_key=0,
        write_limit_per_user=0,
    )


@pytest.mark.timeout(420)
async def test_engine_ranks_movielens_above_popularity_and_als(engine: Engine) -> None:
    import asyncio

    import redis

    from feed.batch.retrain import retrain as retrain_models
    from feed.stores import keys

    split = movielens.load(DATA)
    assert len(split.users) == 14  # the same split as `python -m feed.evaluate movielens --users 60`

    async def idle(events: int) -> bool:
        return int(await engine.redis.get(keys.APPLIED_EVENTS) or 0) >= events

    trained: dict[str, Any] = {}

    async def retrain() -> None:
        r = redis.Redis.from_url(engine.settings.redis_url)
        trained.update(await asyncio.to_thread(retrain_models, r, engine.settings))
        r.close()
        await asyncio.sleep(3.0)  # the API loads a deployed model within its 2 s poll

    feeds, _ = await replay(engine.client, split, idle, retrain=retrain)
    genres, groups = split.genres(), split.groups()
    systems = {"engine": feeds, "popularity": baselines.popularity(split), "als": baselines.als(split, 0)}
    scores = {
        (name, group): score(lists, truth, genres, len(split.catalogue))
        for name, lists in systems.items()
        for group, truth in groups.items()
    }
    assert trained["ranker"] is not None, trained  # a ranker was trained (deployed or not, it says why)
    history = {name: scores[name, "with_history"].ndcg_10 for name in systems}
    assert history["engine"] >= 1.3 * history["popularity"], (history, trained["ranker"])
    assert history["engine"] >= history["als"], (history, trained["ranker"])
    assert scores["engine", "all"].ndcg_10 >= scores["popularity", "all"].ndcg_10, scores
