"""Rerankers: reorder the scored batch (run in order, best first in and out)."""

from __future__ import annotations

import zlib

import numpy as np

from feed.pipeline.candidates import Candidates, required
from feed.pipeline.components import BaseComponent, FeedQuery
from feed.pipeline.features import COLUMN, action_weight_vector, feature_matrix
from feed.ranking.model import RankerSlot
from feed.stores.catalog.model import ACTION_COLUMN, PostCatalog

EXPLAIN_MARGIN = 20  # rows below the page that also get contributions (later rerankers may lift them)


class LearnedRanker(BaseComponent):
    """Part `ranker`: the deployment's learned model scores the window, replacing the hand-set
    formula, whose score ordered the window and is one of the model's features (`prerank`).

    The score is sigmoid(raw model score): positive, so the multiplicative rerankers after this
    one keep their meaning. Skipped while no model is deployed: the formula then ranks (the
    cold start). With `query.explain`, the page's candidates also get each feature's
    contribution to the raw score (`pred_contrib`: costly, so for the page only).
    """

    name = "learned_ranker"

    def __init__(self, catalog: PostCatalog, slot: RankerSlot, action_weights: dict[str, float]) -> None:
        self._catalog = catalog
        self._slot = slot
        self._weights = action_weight_vector(action_weights)

    def enabled(self, query: FeedQuery) -> bool:
        return self._slot.model is not None

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        model = self._slot.model
        if model is None or not len(candidates):
            return candidates
        candidates.features = feature_matrix(self._catalog, query, candidates, self._weights)  # logged too
        x = candidates.features[:, [COLUMN[f] for f in model.features]]
        candidates.parts = {"ranker": model.score(x)}
        candidates.factors = {}
        candidates.rescore()
        order = np.argsort(-candidates.score, kind="stable")
        ranked = candidates.take(order)
        ranked.ranker_version = model.version
        if query.explain:
            head = min(len(ranked), query.limit + EXPLAIN_MARGIN)
            shares = model.contributions(x[order[:head]])
            for j, name in enumerate((*model.features, "base")):
                column = np.full(len(ranked), np.nan)
                column[:head] = shares[:, j]
                ranked.contributions[name] = column
        return ranked


class AuthorDiversityReranker(BaseComponent):
    """Factor `author_diversity`: an author's k-th post (k from 0) is multiplied by decay ** k."""

    name = "author_diversity"

    def __init__(self, decay: float) -> None:
        self._decay = decay

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        n = len(candidates)
        author = required(candidates.author, "author").copy()
        unknown = author < 0
        author[unknown] = -2 - np.flatnonzero(unknown)  # each unknown author counts alone
        order = np.argsort(author, kind="stable")  # groups by author, best first within a group
        grouped = author[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        sizes = np.diff(np.r_[starts, n])
        k = np.empty(n, dtype=np.int64)
        k[order] = np.arange(n) - np.repeat(starts, sizes)
        candidates.factors["author_diversity"] = self._decay**k
        candidates.rescore()
        return candidates.sort()


def mmr_novelty(similarity: np.ndarray, score: np.ndarray, threshold: float, strength: float) -> np.ndarray:
    """Maximal marginal relevance over `score` (best first or not): each row's novelty factor,
    picked greedily as the row maximising score * (1 - strength * redundancy), redundancy rising
    linearly from 0 at cos = `threshold` to 1 at cos = 1 to a row picked before it (`similarity`:
    n x n cosines, its diagonal ignored). Sorting by score * factor gives the picking order."""
    n = len(score)
    novelty = np.ones(n)
    if strength <= 0.0 or not n:
        return novelty
    similarity = similarity.copy()
    np.fill_diagonal(similarity, -1.0)
    # Only rows with a neighbour above the threshold can be penalised or penalise: the others
    # keep factor 1 and move no one's redundancy, so the greedy runs over the close rows alone
    # (their picking order among themselves is the same as within the whole batch).
    close = np.flatnonzero((similarity > threshold).any(axis=1))
    if not len(close):
        return novelty
    similarity, score = similarity[np.ix_(close, close)], score[close]
    closest = np.full(len(close), -1.0)  # highest cos to anything picked so far
    left = np.ones(len(close), dtype=bool)
    for _ in range(len(close)):
        redundancy = np.clip((closest - threshold) / (1.0 - threshold), 0.0, 1.0)
        # a penalty would lift a negative score toward zero: those keep theirs
        factor = np.where(score > 0, 1.0 - strength * redundancy, 1.0)
        i = int(np.argmax(np.where(left, score * factor, -np.inf)))
        left[i] = False
        closest = np.maximum(closest, similarity[i])
        novelty[close[i]] = factor[i]
    return novelty


class NearDuplicateReranker(BaseComponent):
    """Factor `novelty`: near-duplicate suppression by maximal marginal relevance (`mmr_novelty`)
    over the best `window` candidates, cos being the highest similarity between two posts in
    any embedding space both have. Posts on the same topic keep their place; the second copy of
    a repost or a near-identical text drops. The multiplicative form keeps scores in order: each
    pick's adjusted score is at most the previous one's. When no two posts in the window are
    that close, nothing moves.

    The strength is the deployed model's when its training chose one (`RankerModel.
    near_duplicate_strength`: the one of 0..`strength` that ranked its validation users' later
    engagements best; where users do engage with many look-alike posts, suppression costs
    them), else `strength`.
    """

    name = "near_duplicates"

    def __init__(
        self, catalog: PostCatalog, threshold: float, strength: float, window: int, ranker: RankerSlot
    ) -> None:
        self._catalog = catalog
        self._threshold = threshold
        self._strength = strength
        self._window = window
        self._ranker = ranker

    def strength(self) -> float:
        """The suppression strength in use now (see the class docstring)."""
        model = self._ranker.model
        if model is None or model.near_duplicate_strength is None:
            return self._strength
        return model.near_duplicate_strength

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        novelty = np.ones(len(candidates))
        candidates.factors["novelty"] = novelty
        head = min(self._window, len(candidates))
        strength = self.strength()
        if strength <= 0.0:
            return candidates
        similarity = self.max_cosines(candidates.rows[:head])
        novelty[:head] = mmr_novelty(similarity, candidates.score[:head], self._threshold, strength)
        if (novelty[:head] == 1.0).all():
            return candidates
        candidates.rescore()
        return candidates.sort()

    def max_cosines(self, rows: np.ndarray) -> np.ndarray:
        """n x n: the highest cosine between two posts over the spaces both have (-1 if none)."""
        n = len(rows)
        out = np.full((n, n), -1.0)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        for space in self._catalog.vectors:
            has = self._catalog.has[space][safe] & known
            if has.all():
                vectors = self._catalog.gather(space, safe)
                np.maximum(out, vectors @ vectors.T, out=out)
            elif has.any():
                idx = np.ix_(np.flatnonzero(has), np.flatnonzero(has))
                vectors = self._catalog.gather(space, safe[has])
                out[idx] = np.maximum(out[idx], vectors @ vectors.T)
        return out


ENGAGEMENTS = [ACTION_COLUMN[a] for a in ("click", "dwell", "like", "comment", "share", "follow_author")]


class ExplorationReranker(BaseComponent):
    """Factor `exploration`: one slot per page for a post still being discovered.

    Among candidates below the page (which would not be shown otherwise) that have been
    served fewer than `max_impressions` times, each draws
    theta ~ Beta(a + engagements, b + trials - engagements), trials = max(impressions,
    interactions): Thompson sampling, so a post nobody has seen yet gets a fair chance,
    and one that is shown without being engaged with stops winning. The winner moves to
    the slot with the score of the post it displaces (the factor says by how much it was
    lifted). Sampling uses `seed` when set, so a run can be reproduced. Users without any
    interaction yet get no exploration slot (`enabled`).
    """

    name = "exploration"

    def __init__(
        self, position: int, max_impressions: int, prior: tuple[float, float], seed: int | None
    ) -> None:
        self._position = position
        self._max_impressions = max_impressions
        self._prior = prior
        self._seed = seed

    def enabled(self, query: FeedQuery) -> bool:
        """Only for a user the engine has seen interact: a newcomer's first feeds are their first
        impression of the network, so they show the best-known posts, not unproven ones."""
        return query.limit > self._position and query.user.events > 0

    def _rng(self, query: FeedQuery) -> np.random.Generator:
        if self._seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self._seed, zlib.crc32(query.user_key.encode()), len(query.served)])

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        slot = self._position
        lift = np.ones(len(candidates))
        candidates.factors["exploration"] = lift
        below = slice(query.limit, None)
        impressions = required(candidates.impressions, "impressions")[below]
        counts = required(candidates.counts, "counts")[below]
        pool = np.flatnonzero((candidates.score[below] > 0) & (impressions < self._max_impressions))
        if not len(pool):
            return candidates
        engaged = counts[pool][:, ENGAGEMENTS].sum(axis=1)
        trials = np.maximum(impressions[pool], counts[pool].sum(axis=1))
        a, b = self._prior
        theta = self._rng(query).beta(a + engaged, b + np.maximum(trials - engaged, 0.0))
        winner = query.limit + int(pool[int(np.argmax(theta))])
        target = candidates.score[slot] if slot < len(candidates) else candidates.score[winner]
        with np.errstate(over="ignore"):  # a winner scored near zero: a huge but finite lift
            ratio = target / candidates.score[winner]
        lift[winner] = min(max(ratio, 1.0), np.finfo(np.float64).max)
        candidates.rescore()
        order = np.r_[np.arange(slot), winner, np.delete(np.arange(slot, len(candidates)), winner - slot)]
        return candidates.take(order)
