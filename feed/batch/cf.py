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
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import structlog
from threadpoolctl import threadpool_limits

from feed.config import Settings, get_settings
from feed.stores.cf_model import read_confidence, swap
from feed.stores.connection import SyncRedis, connect_sync

log = structlog.get_logger(__name__)

_CHUNK = 10_000


@dataclass(frozen=True)
class TrainResult:
    """What a retrain produced."""

    pairs: int
    users: int
    items: int
    seconds: float


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


def train(r: SyncRedis, settings: Settings, seed: int = 0) -> TrainResult:
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


def main() -> None:
    """`python -m feed.batch.cf`: retrain the CF model now, on the engine's Redis (REDIS_URL)."""
    parser = argparse.ArgumentParser(prog="python -m feed.batch.cf", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = get_settings()
    r = connect_sync(settings.redis_url)
    result = train(r, settings, args.seed)
    print(f"trained on {result.pairs} user-post pairs: {result.users} users, {result.items} posts")


if __name__ == "__main__":
    main()
