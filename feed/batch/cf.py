"""Collaborative filtering: implicit-feedback ALS (the `implicit` package) on the interaction log.

`train` reads the log the event consumer keeps (`feed:log:interactions`), weighs each
(user, post) pair by the positive action weights of its interactions (negative actions
cancel positive ones; pairs left at zero or below are dropped), fits ALS, and swaps the
new user and item factors in atomically: they are written under temporary keys and
RENAMEd over the serving ones in one MULTI/EXEC, so a feed never mixes two models and
serving never waits for training. The same transaction queues a `cf` operation on the
index stream: the process that owns the vector index then copies the item factors into
it (named vector `cf`, tagged with the model version) for the CF candidate source.
Run it alone on demand (`python -m feed.batch.cf`); `feed.batch.retrain` runs it with the other
models, on demand or when enough new interactions arrived (feed/batch/schedule.py).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
import scipy.sparse as sp
import structlog
from threadpoolctl import threadpool_limits

from feed.config import Settings, get_settings
from feed.stores import keys
from feed.stores.messages import IndexOp, LoggedInteraction
from feed.stores.records import vector_to_bytes

log = structlog.get_logger(__name__)

_CHUNK = 10_000


@dataclass(frozen=True)
class TrainResult:
    """What a retrain produced."""

    pairs: int
    users: int
    items: int
    seconds: float


def read_confidence(r: redis.Redis, weights: dict[str, float]) -> dict[tuple[str, str], float]:
    """Summed action weights per (user, post) over the whole interaction log."""
    confidence: dict[tuple[str, str], float] = defaultdict(float)
    start = "-"
    while True:
        rows: Any = r.xrange(keys.INTERACTION_LOG, min=start, count=_CHUNK)
        for _, fields in rows:
            logged = LoggedInteraction.of(fields)
            confidence[logged.user, logged.post] += weights.get(logged.action, 0.0)
        if len(rows) < _CHUNK:
            return confidence
        start = "(" + rows[-1][0].decode()


def fit(
    confidence: dict[tuple[str, str], float], settings: Settings, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """ALS user and item factors for positive (user, post) confidences (also used by the ranker's
    training to rebuild the CF model as it was at an earlier time)."""
    from implicit.als import AlternatingLeastSquares

    users = sorted({u for u, _ in confidence})
    items = sorted({p for _, p in confidence})
    user_index = {u: i for i, u in enumerate(users)}
    item_index = {p: i for i, p in enumerate(items)}
    rows = [user_index[u] for u, _ in confidence]
    cols = [item_index[p] for _, p in confidence]
    matrix = sp.csr_matrix(
        (list(confidence.values()), (rows, cols)), shape=(len(users), len(items)), dtype=np.float32
    )
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS must not add more
        model = AlternatingLeastSquares(
            factors=settings.cf_factors,
            regularization=settings.cf_regularization,
            alpha=settings.cf_alpha,
            iterations=settings.cf_iterations,
            random_state=seed,
        )
        model.fit(matrix, show_progress=False)
    return (
        dict(zip(users, np.asarray(model.user_factors), strict=True)),
        dict(zip(items, np.asarray(model.item_factors), strict=True)),
    )


def train(r: redis.Redis, settings: Settings, seed: int = 0) -> TrainResult:
    """Fit ALS on the log and swap the factors in; an empty log leaves the current model."""
    started = time.perf_counter()
    confidence = {pair: c for pair, c in read_confidence(r, settings.ranking.action_weights).items() if c > 0}
    if not confidence:
        return TrainResult(0, 0, 0, time.perf_counter() - started)
    user_factors, item_factors = fit(confidence, settings, seed)
    swap(r, user_factors, item_factors, len(confidence))
    result = TrainResult(len(confidence), len(user_factors), len(item_factors), time.perf_counter() - started)
    log.info(
        "cf_trained",
        users=result.users,
        items=result.items,
        pairs=result.pairs,
        seconds=round(result.seconds, 1),
    )
    return result


def swap(
    r: redis.Redis, user_factors: dict[str, np.ndarray], item_factors: dict[str, np.ndarray], pairs: int
) -> None:
    """Write the factors under temporary keys, then replace the serving model in one transaction."""
    staging_users, staging_items = keys.CF_USERS + ":staging", keys.CF_ITEMS + ":staging"
    r.delete(staging_users, staging_items)
    for staging, factors in ((staging_users, user_factors), (staging_items, item_factors)):
        batch = list(factors.items())
        for i in range(0, len(batch), _CHUNK):
            r.hset(staging, mapping={k: vector_to_bytes(v) for k, v in batch[i : i + _CHUNK]})
    dims = len(next(iter(item_factors.values())))
    version = time.time_ns() // 1000  # microseconds: unique per retrain, and ordered
    with r.pipeline(transaction=True) as pipe:
        pipe.rename(staging_users, keys.CF_USERS)
        pipe.rename(staging_items, keys.CF_ITEMS)
        pipe.hset(
            keys.CF_META,
            mapping={
                "trained_at": time.time(),
                "users": len(user_factors),
                "items": len(item_factors),
                "pairs": pairs,
                "factors": dims,
                "version": version,
            },
        )
        pipe.xadd(keys.INDEX_STREAM, IndexOp.cf(version).fields())
        pipe.execute()


def main() -> None:
    """`python -m feed.batch.cf`: retrain the CF model now, on the engine's Redis (REDIS_URL)."""
    parser = argparse.ArgumentParser(prog="python -m feed.batch.cf", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = get_settings()
    r = redis.Redis.from_url(settings.redis_url)
    result = train(r, settings, args.seed)
    print(f"trained on {result.pairs} user-post pairs: {result.users} users, {result.items} posts")


if __name__ == "__main__":
    main()
