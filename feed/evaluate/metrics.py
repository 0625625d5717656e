"""Ranking metrics over top-k lists with binary relevance."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def ndcg_at(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """DCG of the top k over the best DCG possible with this many relevant items."""
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of the relevant items in the top k."""
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def hit_at(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """1 if any relevant item is in the top k."""
    return float(any(item in relevant for item in ranked[:k]))


def genre_diversity(ranked: Sequence[int], genres: Mapping[int, frozenset[str]], k: int) -> float:
    """Mean pairwise Jaccard distance of the genre sets in the top k (0: all alike)."""
    sets = [genres.get(item, frozenset()) for item in ranked[:k]]
    pairs = list(itertools.combinations(sets, 2))
    if not pairs:
        return 0.0
    return float(np.mean([1.0 - len(a & b) / len(a | b) if a | b else 0.0 for a, b in pairs]))


@dataclass(frozen=True)
class Scores:
    """One ranker's scores over a set of users."""

    users: int
    ndcg_10: float
    recall_20: float
    hit_10: float
    coverage: float
    diversity: float

    def as_dict(self) -> dict[str, float]:
        """The report's keys: `users` and each metric (`ndcg@10`, `recall@20`, ...)."""
        return {
            "users": self.users,
            "ndcg@10": self.ndcg_10,
            "recall@20": self.recall_20,
            "hit_rate@10": self.hit_10,
            "coverage": self.coverage,
            "genre_diversity": self.diversity,
        }


def score(
    lists: Mapping[int, Sequence[int]],
    truth: Mapping[int, set[int]],
    genres: Mapping[int, frozenset[str]],
    catalogue_size: int,
) -> Scores:
    """Mean metrics over the users in `truth` (a missing list counts as empty)."""
    users = sorted(truth)
    ranked = {u: list(lists.get(u, [])) for u in users}
    shown = {item for u in users for item in ranked[u][:20]}
    return Scores(
        users=len(users),
        ndcg_10=float(np.mean([ndcg_at(ranked[u], truth[u], 10) for u in users])) if users else 0.0,
        recall_20=float(np.mean([recall_at(ranked[u], truth[u], 20) for u in users])) if users else 0.0,
        hit_10=float(np.mean([hit_at(ranked[u], truth[u], 10) for u in users])) if users else 0.0,
        coverage=len(shown) / catalogue_size if catalogue_size else 0.0,
        diversity=float(np.mean([genre_diversity(ranked[u], genres, 10) for u in users])) if users else 0.0,
    )
