"""Rerankers: reorder the scored list (run in order, best first in and out)."""

from __future__ import annotations

from collections import defaultdict

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
