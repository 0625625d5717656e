"""Interest-vector maths: an exponential moving average on the unit sphere."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from feed.config import RankingConfig

Slot = TypeVar("Slot", bound=Hashable)


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


def ema_batch(
    start: Mapping[Slot, np.ndarray | None], updates: Mapping[Slot, Sequence[tuple[np.ndarray, float, float]]]
) -> dict[Slot, np.ndarray | None]:
    """Each slot's vector after `ema_update(vector, post, weight, rate)` for its updates in order.

    Computed a round at a time (round r moves every slot that has an r-th update, per vector
    size, in one numpy expression), with the same float32/float64 steps as `ema_update`, so
    the result is bit for bit the one of the calls one by one, at a fraction of their cost.
    """
    out = {slot: start.get(slot) for slot in updates}
    by_size: dict[int, list[Slot]] = defaultdict(list)
    for slot, steps in updates.items():
        if steps:
            by_size[len(steps[0][0])].append(slot)
    for size, slots in by_size.items():
        for r in range(max(len(updates[s]) for s in slots)):
            moves = [(s, updates[s][r]) for s in slots if len(updates[s]) > r]
            moves = [(s, m) for s, m in moves if min(1.0, m[2] * abs(m[1])) > 0.0]  # zero step: unchanged
            if not moves:
                continue
            step = np.array([min(1.0, rate * abs(weight)) for _, (_, weight, rate) in moves])
            sign = np.sign([weight for _, (_, weight, _) in moves])
            zero = np.zeros(size, dtype=np.float32)
            base = np.stack([v if (v := out[s]) is not None else zero for s, _ in moves])
            posts = np.stack([post for _, (post, _, _) in moves])
            moved = (1.0 - step).astype(np.float32)[:, None] * base + (step * sign)[:, None] * posts
            norms = np.sqrt([row.dot(row) for row in moved])  # what np.linalg.norm does per vector
            with np.errstate(divide="ignore", invalid="ignore"):  # no direction: None below
                result = (moved / norms[:, None]).astype(np.float32)
            for i, (slot, _) in enumerate(moves):
                out[slot] = result[i] if norms[i] >= 1e-9 else None
    return out
