"""Training labels of the learned ranker: what a user did with a post after it was (or would
have been) served, as a relevance grade, and the NDCG gain of each grade."""

from __future__ import annotations

from feed.config import NEGATIVE_ACTIONS, RankingConfig
from feed.events.ema import action_weight

# label grades: 0 a negative action, 1 nothing, then by the summed positive action weight
GRADE_BOUNDS = (0.5, 1.5)  # weight below 0.5 (a view or a click): 2; below 1.5 (a like): 3; more: 4
LABEL_GAIN = [-1.0, 0.0, 1.0, 3.0, 7.0]  # 2**(grade - 1) - 1 for positives; a negative costs as a weak hit
NOTHING = 1


def signed_weight(action: str, ranking: RankingConfig) -> float:
    """An action's weight for labels: negative actions negative whatever their configured sign
    (dwell counts as a zero-length dwell: the interaction log keeps no lengths)."""
    weight = action_weight(action, None, ranking)
    return -abs(weight) if action in NEGATIVE_ACTIONS else weight


def grade(weights: list[float]) -> int:
    """Label grade of a user's actions on a post after the cutoff."""
    if any(w < 0.0 for w in weights):  # a hide or report after a like still says "not this"
        return 0
    total = sum(weights)
    if total == 0.0:
        return NOTHING
    if total < GRADE_BOUNDS[0]:
        return 2
    return 3 if total < GRADE_BOUNDS[1] else 4
