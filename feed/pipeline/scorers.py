"""Scorers: each sets one named part (added) or factor (multiplied) column of the score."""

from __future__ import annotations

import numpy as np

from feed.config import RankingConfig
from feed.pipeline.candidates import Candidates, required
from feed.pipeline.components import BaseComponent, FeedQuery
from feed.pipeline.features import user_cosines
from feed.stores.catalog.model import ACTIONS, PostCatalog
from feed.stores.records import SPACES


class SimilarityScorer(BaseComponent):
    """Part `similarity`: weight * (1 + cos) / 2, in [0, weight].

    For each of the user's horizons (long-term and short-term interest vectors), cos is the
    space-weighted mean of cos(user vector, post vector) over the embedding spaces in which
    both have a vector (text, image); the horizons mix as (1 - short_share) * long +
    short_share * short, or count alone when the other is missing. A post sharing no space
    with the user (or a user with no vector yet) gets the neutral value, cos = 0. Post
    vectors are read from the catalogue (`user_cosines`).
    """

    name = "similarity"

    def __init__(
        self, catalog: PostCatalog, weight: float, space_weights: dict[str, float], short_share: float
    ) -> None:
        self._catalog = catalog
        self._weight = weight
        self._space_weights = space_weights
        self._short_share = short_share

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        n = len(candidates)
        known = candidates.known()
        # every cosine, also those of spaces weighted 0: the learned ranker's features reuse them
        cosines = user_cosines(self._catalog, np.where(known, candidates.rows, 0), known, query)
        # per horizon (long, short): weighted cosine sum and weight sum
        total = np.zeros((2, n))
        weights = np.zeros((2, n))
        for s, space in enumerate(SPACES):
            w = self._space_weights.get(space, 0.0)
            if w <= 0.0:
                continue
            for h in range(2):
                cos = cosines[:, 2 * s + h]
                has = ~np.isnan(cos)
                total[h] += np.where(has, w * cos, 0.0)
                weights[h] += np.where(has, w, 0.0)
        candidates.cosines = cosines
        cos = np.divide(total, weights, out=np.zeros_like(total), where=weights > 0)
        has_long, has_short = weights > 0
        share = np.where(has_short, np.where(has_long, self._short_share, 1.0), 0.0)
        mixed = (1.0 - share) * cos[0] + share * cos[1]
        candidates.parts["similarity"] = self._weight * (1.0 + mixed) / 2.0


class EngagementScorer(BaseComponent):
    """Part `engagement`: weight * sum over actions of action weight * P(action | interaction).

    P(action) = count / (all interactions with the post + prior): smoothed, so a post with
    two likes out of two interactions does not outrank one with 80 out of 100. Negative
    actions have negative weights, so reported or hidden posts score below zero.
    """

    name = "engagement"

    def __init__(self, ranking: RankingConfig) -> None:
        self._weights = np.array([ranking.action_weights.get(a, 0.0) for a in ACTIONS])
        self._weight = ranking.engagement_weight
        self._prior = ranking.engagement_prior

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        counts = required(candidates.counts, "counts").astype(np.float64)
        rates = (counts @ self._weights) / (counts.sum(axis=1) + self._prior)
        candidates.parts["engagement"] = self._weight * rates


class TrendingScorer(BaseComponent):
    """Part `trending`: weight * log(1 + trending value) / log(1 + the largest among the candidates).

    Popular-now posts score up to `weight`; the log keeps a few viral posts from flattening
    the rest. This is what a user with no history is ranked by, besides freshness.
    (Named `trending_score` so it can be switched off apart from the `trending` source.)
    """

    name = "trending_score"

    def __init__(self, weight: float) -> None:
        self._weight = weight

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        values = np.log1p(required(candidates.trending, "trending"))
        top = float(values.max()) if len(values) else 0.0
        candidates.parts["trending"] = self._weight * values / top if top > 0 else np.zeros(len(values))


class AuthorAffinityScorer(BaseComponent):
    """Part `affinity`: weight * tanh(the user's accumulated action weight on the author / 5)."""

    name = "affinity"

    def __init__(self, catalog: PostCatalog, weight: float) -> None:
        self._catalog = catalog
        self._weight = weight

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.user.affinity)

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        codes = self._catalog.author_codes
        by_author = np.zeros(len(self._catalog.author_keys) + 1)  # the last entry answers NO_ROW (-1)
        for author, raw in query.user.affinity.items():
            if author in codes:
                by_author[codes[author]] = raw
        values = by_author[required(candidates.author, "author")]
        candidates.parts["affinity"] = self._weight * np.tanh(values / 5.0)


class FreshnessScorer(BaseComponent):
    """Factor `freshness`: 0.5 ** (age / half-life)."""

    name = "freshness"

    def __init__(self, half_life_s: float) -> None:
        self._half_life_s = half_life_s

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        age = np.maximum(query.now - required(candidates.created_at, "created_at"), 0.0)
        candidates.factors["freshness"] = 0.5 ** (age / self._half_life_s)


class NetworkScorer(BaseComponent):
    """Factor `network`: in-network and out-of-network posts weigh differently."""

    name = "network"

    def __init__(self, in_network: float, out_of_network: float) -> None:
        self._in = in_network
        self._out = out_of_network

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        candidates.factors["network"] = np.where(candidates.in_network, self._in, self._out)


class CollaborativeScorer(BaseComponent):
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

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        known = required(candidates.cf_known, "cf_known")
        if query.user.cf is None or candidates.cf is None or not known.any():
            candidates.parts["cf"] = np.zeros(len(candidates))
            return
        preference = np.clip(candidates.cf @ query.user.cf, 0.0, 1.0)
        scale = self._weight * query.user.events / (query.user.events + self._half)
        candidates.parts["cf"] = np.where(known, scale * preference, 0.0)


class SmallAuthorScorer(BaseComponent):
    """Factor `small_author`: 1 + boost * half / (half + reach), where reach is the number of
    interactions the author's posts have received; a new creator's posts get up to 1 + boost,
    an established author's tend to 1."""

    name = "small_author"

    def __init__(self, boost: float, half_reach: float) -> None:
        self._boost = boost
        self._half = half_reach

    def enabled(self, query: FeedQuery) -> bool:
        return self._boost > 0.0

    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        reach = required(candidates.author_reach, "author_reach").astype(np.float64)
        candidates.factors["small_author"] = 1.0 + self._boost * self._half / (self._half + reach)
