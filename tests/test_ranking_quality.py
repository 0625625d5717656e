"""Ranking regression test: a small MovieLens replay (60 users, shipped in tests/data) through the
whole engine. It fails if the engine's feeds score below the popularity baseline."""

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


@pytest.mark.timeout(300)
async def test_engine_ranks_movielens_at_least_as_well_as_popularity(engine: Engine) -> None:
    from feed.stores import keys

    split = movielens.load(DATA)
    assert len(split.users) == 14  # the same split as `python -m feed.evaluate movielens --users 60`

    async def idle(events: int) -> bool:
        return int(await engine.redis.get(keys.APPLIED_EVENTS) or 0) >= events

    async def retrain() -> None:
        import asyncio

        import redis

        from feed.batch import cf

        r = redis.Redis.from_url(engine.settings.redis_url)
        await asyncio.to_thread(cf.train, r, engine.settings)
        r.close()

    feeds, _ = await replay(engine.client, split, idle, retrain=retrain)
    genres = {m.movie_id: m.genres for m in split.catalogue.values()}
    engine_scores = score(feeds, split.truth, genres, len(split.catalogue))
    popular = score(baselines.popularity(split), split.truth, genres, len(split.catalogue))
    assert engine_scores.ndcg_10 >= popular.ndcg_10, (engine_scores, popular)
    assert engine_scores.recall_20 >= popular.recall_20, (engine_scores, popular)
