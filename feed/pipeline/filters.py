"""Filters: drop candidates the user must not see (run in order)."""

from __future__ import annotations

import re

from feed.pipeline.framework import Candidate, FeedQuery


class DuplicateFilter:
    """Keeps the first occurrence of each post (sources listed first win)."""

    name = "duplicates"

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        seen: set[str] = set()
        kept: list[Candidate] = []
        for c in candidates:
            if c.post_key not in seen:
                seen.add(c.post_key)
                kept.append(c)
        return kept


class MissingPostFilter:
    """Drops candidates with no stored post (deleted, or not ingested yet)."""

    name = "missing_posts"

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.record is not None]


class OwnPostFilter:
    """Drops the user's own posts."""

    name = "own_posts"

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.record is None or c.record.author_key != query.user_key]


class BlockedAuthorFilter:
    """Drops posts by authors the user blocked or muted."""

    name = "blocked_authors"

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.graph.blocked or query.graph.muted)

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        hidden = query.graph.blocked | query.graph.muted
        return [c for c in candidates if c.record is None or c.record.author_key not in hidden]


class SeenFilter:
    """Drops posts the user already interacted with."""

    name = "seen"

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.user.seen)

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.post_key not in query.user.seen]


class ServedFilter:
    """Drops posts already served on earlier pages of this feed session."""

    name = "served"

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.served)

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        return [c for c in candidates if c.post_key not in query.served]


class MaxAgeFilter:
    """Drops posts older than `max_age_s`."""

    name = "max_age"

    def __init__(self, max_age_s: float) -> None:
        self._max_age_s = max_age_s

    def enabled(self, query: FeedQuery) -> bool:
        return True

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        oldest = query.now - self._max_age_s
        return [c for c in candidates if c.record is None or c.record.created_at >= oldest]


class MutedKeywordFilter:
    """Drops posts whose text, transcript or detected objects contain a word the user muted
    (case-insensitive, whole words or phrases)."""

    name = "muted_keywords"

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.graph.muted_keywords)

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        pattern = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in sorted(query.graph.muted_keywords)) + r")\b",
            re.IGNORECASE,
        )

        def muted(c: Candidate) -> bool:
            r = c.record
            return r is not None and bool(pattern.search(" ".join((r.text, r.transcript, *r.tags))))

        return [c for c in candidates if not muted(c)]


class HiddenAuthorFilter:
    """Drops posts by authors the user hid a post of, reported, or blocked through an interaction."""

    name = "hidden_authors"

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.user.hidden_authors)

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        hidden = query.user.hidden_authors
        return [c for c in candidates if c.record is None or c.record.author_key not in hidden]
