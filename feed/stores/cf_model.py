"""The CF model in Redis: the interaction log's confidences to train on, and the swap of new
factors in (`feed/batch/cf.py` trains)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import redis

from feed.stores import keys
from feed.stores.messages import IndexOp, LoggedInteraction
from feed.stores.records import vector_to_bytes

_CHUNK = 10_000


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
