"""Interest-vector maths: an exponential moving average on the unit sphere."""

from __future__ import annotations

import numpy as np

from feed.config import RankingConfig


def action_weight(action: str, dwell_ms: int | None, ranking: RankingConfig) -> float:
    """Signed weight of an action; dwell scales with its length up to `dwell_full_ms`."""
    weight = ranking.action_weights.get(action, 0.0)
    if action == "dwell":
        weight *= min(1.0, max(dwell_ms or 0, 0) / ranking.dwell_full_ms)
    return weight


def ema_update(user: np.ndarray | None, post: np.ndarray, weight: float, rate: float) -> np.ndarray | None:
    """Move `user` toward `post` (weight > 0) or away from it (weight < 0).

    With step = min(1, rate * |weight|): u' = normalise((1 - step) * u + step * sign(weight) * p).
    A user with no vector starts at zero. Returns None if the result has no direction.
    """
    step = min(1.0, rate * abs(weight))
    if step == 0.0:
        return user
    base = np.zeros_like(post) if user is None else user
    moved = (1.0 - step) * base + step * np.sign(weight) * post
    norm = float(np.linalg.norm(moved))
    if norm < 1e-9:
        return None
    result: np.ndarray = (moved / norm).astype(np.float32)
    return result
