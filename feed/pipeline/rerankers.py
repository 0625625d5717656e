"""Rerankers: reorder the scored list (run in order, best first in and out)."""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from feed.pipeline.framework import Candidate, FeedQuery


class AuthorDiversityReranker:
    """Factor `author_diversity`: an author's k-th post (k from 0) is multiplied by decay ** k."""

    name = "author_diversity"

    def __init__(self, decay: float) -> None:
        self._decay = decay

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def rerank(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        seen: dict[str, int] = defaultdict(int)
        for c in candidates:
            author = c.record.author_key if c.record is not None else c.post_key
            c.factors["author_diversity"] = self._decay ** seen[author]
            seen[author] += 1
            c.rescore()
        return sorted(candidates, key=lambda c: c.score, reverse=True)


class NearDuplicateReranker:
    """Factor `novelty`: near-duplicate suppression by maximal marginal relevance (MMR).

    Over the best `window` candidates, greedily picks the one maximising
    score * (1 - strength * redundancy), where redundancy rises linearly from 0 at
    cos = `threshold` to 1 at cos = 1, cos being the highest similarity to a post picked
    before it in any embedding space both have. Posts on the same topic keep their place;
    the second copy of a repost or a near-identical text drops. The multiplicative form
    keeps scores in order: each pick's adjusted score is at most the previous one's.
    """

    name = "near_duplicates"

    def __init__(self, threshold: float, strength: float, window: int) -> None:
        self._threshold = threshold
        self._strength = strength
        self._window = window

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def rerank(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        head, tail = candidates[: self._window], candidates[self._window :]
        similarity = _max_cosines([c.record.vectors if c.record else {} for c in head])
        base = np.array([c.score for c in head], dtype=np.float64)
        closest = np.full(len(head), -1.0)  # highest cos to anything picked so far
        left = np.ones(len(head), dtype=bool)
        picked: list[Candidate] = []
        for _ in range(len(head)):
            redundancy = np.clip((closest - self._threshold) / (1.0 - self._threshold), 0.0, 1.0)
            # a penalty would lift a negative score toward zero: those keep theirs
            novelty = np.where(base > 0, 1.0 - self._strength * redundancy, 1.0)
            adjusted = base * novelty
            i = int(np.argmax(np.where(left, adjusted, -np.inf)))
            left[i] = False
            closest = np.maximum(closest, similarity[i])
            head[i].factors["novelty"] = float(novelty[i])
            head[i].rescore()
            picked.append(head[i])
        return sorted(picked + tail, key=lambda c: c.score, reverse=True)


def _max_cosines(vectors: list[dict[str, np.ndarray]]) -> np.ndarray:
    """n x n: the highest cosine between two posts over the spaces both have (-1 if none)."""
    n = len(vectors)
    out = np.full((n, n), -1.0)
    for space in {s for v in vectors for s in v}:
        rows = [i for i, v in enumerate(vectors) if space in v]
        matrix = np.stack([vectors[i][space] for i in rows]).astype(np.float64)
        idx = np.ix_(rows, rows)
        out[idx] = np.maximum(out[idx], matrix @ matrix.T)
    return out


ENGAGEMENTS = frozenset({"click", "dwell", "like", "comment", "share", "follow_author"})


class ExplorationReranker:
    """Factor `exploration`: one slot per page for a post still being discovered.

    Among candidates below the page (which would not be shown otherwise) that have been
    served fewer than `max_impressions` times, each draws
    theta ~ Beta(a + engagements, b + trials - engagements), trials = max(impressions,
    interactions): Thompson sampling, so a post nobody has seen yet gets a fair chance,
    and one that is shown without being engaged with stops winning. The winner moves to
    the slot with the score of the post it displaces (the factor says by how much it was
    lifted). Sampling uses `seed` when set, so a run can be reproduced.
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
        return query.limit > self._position

    def _rng(self, query: FeedQuery) -> np.random.Generator:
        if self._seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self._seed, zlib.crc32(query.user_key.encode()), len(query.served)])

    def rerank(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        slot = self._position
        pool = [
            i
            for i in range(query.limit, len(candidates))
            if candidates[i].score > 0 and candidates[i].impressions < self._max_impressions
        ]
        if not pool:
            return candidates
        engaged = np.array([sum(candidates[i].counts.get(a, 0.0) for a in ENGAGEMENTS) for i in pool])
        trials = np.array([max(candidates[i].impressions, sum(candidates[i].counts.values())) for i in pool])
        a, b = self._prior
        theta = self._rng(query).beta(a + engaged, b + np.maximum(trials - engaged, 0.0))
        winner = candidates.pop(pool[int(np.argmax(theta))])
        target = candidates[slot].score if slot < len(candidates) else winner.score
        winner.factors["exploration"] = max(target / winner.score, 1.0)
        winner.rescore()
        candidates.insert(slot, winner)
        return candidates
