"""Filters: drop candidates the user must not see. Each returns a mask of the candidates to
keep; the pipeline runs them in order and drops the union of what they reject."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np
from cachetools import LRUCache

from feed.pipeline.candidates import Candidates, required
from feed.pipeline.components import BaseComponent, FeedQuery
from feed.stores.catalog.model import PostCatalog


class DuplicateFilter(BaseComponent):
    """Keeps the first occurrence of each post (sources listed first win)."""

    name = "duplicates"

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        rows = candidates.rows
        n = len(rows)
        first = np.zeros(int(rows.max(initial=0)) + 2, dtype=np.int64)  # NO_ROW (-1) uses the last slot
        first[rows[::-1]] = np.arange(n - 1, -1, -1)  # later writes win: each row's first position
        return np.asarray(first[rows] == np.arange(n))


class MissingPostFilter(BaseComponent):
    """Drops candidates the catalogue does not have (deleted, or not ingested yet)."""

    name = "missing_posts"

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        return required(candidates.alive, "alive")


class _AuthorFilter(BaseComponent, ABC):
    """Drops posts by the authors `authors(query)` names."""

    def __init__(self, catalog: PostCatalog) -> None:
        self._catalog = catalog

    @abstractmethod
    def authors(self, query: FeedQuery) -> frozenset[str]:
        """The author keys whose posts to drop."""

    def enabled(self, query: FeedQuery) -> bool:
        return bool(self.authors(query))

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        hidden = self._catalog.author_mask(self._catalog.authors_of(self.authors(query)))
        return np.asarray(~hidden[required(candidates.author, "author")])


class OwnPostFilter(_AuthorFilter):
    """Drops the user's own posts."""

    name = "own_posts"

    def authors(self, query: FeedQuery) -> frozenset[str]:
        return frozenset({query.user_key})


class BlockedAuthorFilter(_AuthorFilter):
    """Drops posts by authors the user blocked or muted."""

    name = "blocked_authors"

    def authors(self, query: FeedQuery) -> frozenset[str]:
        return query.graph.blocked | query.graph.muted


class HiddenAuthorFilter(_AuthorFilter):
    """Drops posts by authors the user hid a post of, reported, or blocked through an interaction."""

    name = "hidden_authors"

    def authors(self, query: FeedQuery) -> frozenset[str]:
        return query.user.hidden_authors


class _PostFilter(BaseComponent, ABC):
    """Drops the posts `posts(query)` names."""

    def __init__(self, catalog: PostCatalog) -> None:
        self._catalog = catalog

    @abstractmethod
    def posts(self, query: FeedQuery) -> frozenset[str]:
        """The post keys to drop."""

    def enabled(self, query: FeedQuery) -> bool:
        return bool(self.posts(query))

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        dropped = self._catalog.row_mask(self._catalog.rows_of(self.posts(query)))
        return np.asarray(~dropped[candidates.rows])


class SeenFilter(_PostFilter):
    """Drops posts the user already interacted with.

    Looking up thousands of seen post keys costs milliseconds of cache misses per request,
    so their rows are kept per user until the user interacts again (the seen set changes
    only then) or a post leaves the catalogue, within `cache_bytes`.
    """

    name = "seen"

    def __init__(self, catalog: PostCatalog, cache_bytes: int = 64 * 2**20) -> None:
        super().__init__(catalog)
        self._rows: LRUCache[tuple[str, int, int], np.ndarray] = LRUCache(
            maxsize=cache_bytes, getsizeof=lambda rows: max(rows.nbytes, 1)
        )

    def posts(self, query: FeedQuery) -> frozenset[str]:
        return query.user.seen

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        key = (query.user_key, query.user.events, self._catalog.removals)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._catalog.rows_of(query.user.seen).astype(np.int32)
            self._rows[key] = rows
        return np.asarray(~self._catalog.row_mask(rows)[candidates.rows])


class ServedFilter(_PostFilter):
    """Drops posts already served on earlier pages of this feed session."""

    name = "served"

    def posts(self, query: FeedQuery) -> frozenset[str]:
        return query.served


class MaxAgeFilter(BaseComponent):
    """Drops posts older than `max_age_s` (0: no limit, the filter is skipped)."""

    name = "max_age"

    def __init__(self, max_age_s: float) -> None:
        self._max_age_s = max_age_s

    def enabled(self, query: FeedQuery) -> bool:
        return self._max_age_s > 0

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        created = required(candidates.created_at, "created_at")
        return np.asarray(created >= query.now - self._max_age_s)


class MutedKeywordFilter(BaseComponent):
    """Drops posts whose text, transcript or detected objects contain a word the user muted
    (case-insensitive, whole words or phrases)."""

    name = "muted_keywords"

    def enabled(self, query: FeedQuery) -> bool:
        return bool(query.graph.muted_keywords)

    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        pattern = re.compile(
            r"\b(?:" + "|".join(re.escape(w) for w in sorted(query.graph.muted_keywords)) + r")\b",
            re.IGNORECASE,
        )
        texts = required(candidates.texts, "texts")
        return np.fromiter((not pattern.search(t) for t in texts), dtype=bool, count=len(texts))
