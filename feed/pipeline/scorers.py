"""Scorers: each sets one named part (added) or factor (multiplied) of a candidate's score."""

from __future__ import annotations

import math

import numpy as np

from feed.config import RankingConfig
from feed.pipeline.framework import Candidate, FeedQuery
from feed.stores.records import PostRecord


class SimilarityScorer:
    """Part `similarity`: weight * (1 + cos) / 2, in [0, weight].

    For each of the user's horizons (long-term and short-term interest vectors), cos is the
    space-weighted mean of cos(user vector, post vector) over the embedding spaces in which
    both have a vector (text, image); the horizons mix as (1 - short_share) * long +
    short_share * short, or count alone when the other is missing. A post sharing no space
    with the user (or a user with no vector yet) gets the neutral value, cos = 0.
    """

    name = "similarity"

    def __init__(self, weight: float, space_weights: dict[str, float], short_share: float) -> None:
        self._weight = weight
        self._space_weights = space_weights
        self._short_share = short_share

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def _cosines(self, user: dict[str, np.ndarray], posts: list[PostRecord]) -> tuple[np.ndarray, np.ndarray]:
        """Space-weighted mean cosine per post, and whether any space was shared."""
        total = np.zeros(len(posts), dtype=np.float64)
        weights = np.zeros(len(posts), dtype=np.float64)
        for space, user_vector in user.items():
            w = self._space_weights.get(space, 0.0)
            rows = [i for i, p in enumerate(posts) if space in p.vectors]
            if w <= 0.0 or not rows:
                continue
            matrix = np.stack([posts[i].vectors[space] for i in rows])
            total[rows] += w * (matrix @ user_vector)
            weights[rows] += w
        return np.divide(total, weights, out=np.zeros_like(total), where=weights > 0), weights > 0

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        scored = [c for c in candidates if c.record is not None]
        posts = [c.record for c in scored if c.record is not None]
        long_cos, has_long = self._cosines(query.user.vectors, posts)
        short_cos, has_short = self._cosines(query.user.short_vectors, posts)
        share = np.where(has_short, np.where(has_long, self._short_share, 1.0), 0.0)
        cosines = (1.0 - share) * long_cos + share * short_cos
        for c, cos in zip(scored, cosines, strict=True):
            c.parts["similarity"] = self._weight * (1.0 + float(cos)) / 2.0


class EngagementScorer:
    """Part `engagement`: weight * sum over actions of action weight * P(action | interaction).

    P(action) = count / (all interactions with the post + prior): smoothed, so a post with
    two likes out of two interactions does not outrank one with 80 out of 100. Negative
    actions have negative weights, so reported or hidden posts score below zero.
    """

    name = "engagement"

    def __init__(self, ranking: RankingConfig) -> None:
        self._weights = ranking.action_weights
        self._weight = ranking.engagement_weight
        self._prior = ranking.engagement_prior

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        for c in candidates:
            total = sum(c.counts.values()) + self._prior
            rates = sum(self._weights.get(action, 0.0) * n for action, n in c.counts.items()) / total
            c.parts["engagement"] = self._weight * rates


class TrendingScorer:
    """Part `trending`: weight * log(1 + trending value) / log(1 + the largest among the candidates).

    Popular-now posts score up to `weight`; the log keeps a few viral posts from flattening
    the rest. This is what a user with no history is ranked by, besides freshness.
    (Named `trending_score` so it can be switched off apart from the `trending` source.)
    """

    name = "trending_score"

    def __init__(self, weight: float) -> None:
        self._weight = weight

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        top = math.log1p(max((c.trending for c in candidates), default=0.0))
        for c in candidates:
            c.parts["trending"] = self._weight * math.log1p(c.trending) / top if top > 0 else 0.0


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


class CollaborativeScorer:
    """Part `cf`: weight * n / (n + half) * the CF model's predicted preference (the dot
    product of user and item factors, which implicit ALS fits to 1 for interactions and 0
    otherwise), clipped to [0, 1]; n is the user's interaction count, so the part grows from
    nothing for a new user to `weight` for a heavy one. Posts the model does not know get 0.
    """

    name = "cf"

    def __init__(self, weight: float, half_events: float) -> None:
        self._weight = weight
        self._half = half_events

    def enabled(self, query: FeedQuery) -> bool:
        return query.user.cf is not None

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        known = [c for c in candidates if c.cf is not None]
        if query.user.cf is None or not known:
            return
        preference = np.clip(np.stack([c.cf for c in known if c.cf is not None]) @ query.user.cf, 0.0, 1.0)
        scale = self._weight * query.user.events / (query.user.events + self._half)
        for c in candidates:
            c.parts["cf"] = 0.0
        for c, value in zip(known, preference, strict=True):
            c.parts["cf"] = scale * float(value)


class SmallAuthorScorer:
    """Factor `small_author`: 1 + boost * half / (half + reach), where reach is the number of
    interactions the author's posts have received; a new creator's posts get up to 1 + boost,
    an established author's tend to 1."""

    name = "small_author"

    def __init__(self, boost: float, half_reach: float) -> None:
        self._boost = boost
        self._half = half_reach

    def enabled(self, query: FeedQuery) -> bool:
        return self._boost > 0.0

    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        for c in candidates:
            c.factors["small_author"] = 1.0 + self._boost * self._half / (self._half + c.author_reach)
