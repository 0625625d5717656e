"""Scorers: each sets one named part (added) or factor (multiplied) of a candidate's score."""

from __future__ import annotations

import math

import numpy as np

from feed.config import RankingConfig
from feed.pipeline.framework import Candidate, FeedQuery


class SimilarityScorer:
    """Part `similarity`: weight * (1 + cos(user vector, post vector)) / 2, in [0, weight].

    A user with no interest vector yet gets the neutral value (cos = 0) for every post.
    """

    name = "similarity"

    def __init__(self, weight: float) -> None:
        self._weight = weight

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        scored = [c for c in candidates if c.record is not None]
        if not scored:
            return
        if query.user.vector is None:
            cosines = np.zeros(len(scored), dtype=np.float32)
        else:
            matrix = np.stack([c.record.vector for c in scored if c.record is not None])
            cosines = matrix @ query.user.vector
        for c, cos in zip(scored, cosines, strict=True):
            c.parts["similarity"] = self._weight * (1.0 + float(cos)) / 2.0


class EngagementScorer:
    """Part `engagement`: weight * tanh(sum of action weight * count / 10); negatives pull it down."""

    name = "engagement"

    def __init__(self, ranking: RankingConfig) -> None:
        self._weights = ranking.action_weights
        self._weight = ranking.engagement_weight

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        for c in candidates:
            raw = sum(self._weights.get(action, 0.0) * n for action, n in c.counts.items())
            c.parts["engagement"] = self._weight * math.tanh(raw / 10.0)


class AuthorAffinityScorer:
    """Part `affinity`: weight * tanh(the user's accumulated action weight on the author / 5)."""

    name = "affinity"

    def __init__(self, weight: float) -> None:
        self._weight = weight

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.user.affinity)

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        for c in candidates:
            if c.record is not None:
                raw = query.user.affinity.get(c.record.author_key, 0.0)
                c.parts["affinity"] = self._weight * math.tanh(raw / 5.0)


class FreshnessScorer:
    """Factor `freshness`: 0.5 ** (age / half-life)."""

    name = "freshness"

    def __init__(self, half_life_s: float) -> None:
        self._half_life_s = half_life_s

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        for c in candidates:
            if c.record is not None:
                age = max(query.now - c.record.created_at, 0.0)
                c.factors["freshness"] = 0.5 ** (age / self._half_life_s)


class NetworkScorer:
    """Factor `network`: in-network and out-of-network posts weigh differently."""

    name = "network"

    def __init__(self, in_network: float, out_of_network: float) -> None:
        self._in = in_network
        self._out = out_of_network

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        for c in candidates:
            c.factors["network"] = self._in if c.in_network else self._out
