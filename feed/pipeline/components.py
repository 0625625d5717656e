"""What a pipeline component is: the query every stage receives, one protocol per stage kind,
and `BaseComponent`, which components extend for the defaults.

Stage kinds and their semantics (after X's home mixer): query hydrators run in parallel and
fill the query; sources run in parallel and return candidates; candidate hydrators add
feature columns; filters run in order and drop candidates; scorers run in order and add
score parts; rerankers reorder the best of the scored list; side effects run after the
response, off its path. Every component has a `name` (its reports, DISABLED_COMPONENTS) and
`enabled(query)`. How they are run is `runner.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from feed.pipeline.candidates import Candidates, RankedPost
from feed.social_graph import SocialGraph
from feed.stores.feature_store import UserFeatures

NO_USER = UserFeatures(vectors={}, events=0, seen=frozenset(), affinity={})


@dataclass(slots=True)
class FeedQuery:
    """One feed request and everything hydrated about its user."""

    user_id: int | str
    user_key: str
    limit: int
    cursor: str
    now: float
    user: UserFeatures = NO_USER
    graph: SocialGraph = field(default_factory=SocialGraph)
    served: frozenset[str] = frozenset()
    preview: bool = False  # an operator's look: ranked afresh, no side effects, nothing kept
    explain: bool = False  # the caller wants each item's feature contributions (costly: page only)


class Component(Protocol):
    """What every stage component has."""

    name: str

    def enabled(self, query: FeedQuery) -> bool:
        """Whether to run for this query."""
        ...


class QueryHydrator(Component, Protocol):
    async def hydrate(self, query: FeedQuery) -> None:
        """Fill its own fields of the query."""
        ...


class Source(Component, Protocol):
    async def fetch(self, query: FeedQuery) -> Candidates:
        """Candidates from this source, at most its budget."""
        ...


class CandidateHydrator(Component, Protocol):
    async def hydrate(self, query: FeedQuery, candidates: Candidates) -> None:
        """Fill its feature columns of the batch."""
        ...


class Filter(Component, Protocol):
    def apply(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        """Mask of the candidates to keep."""
        ...


class Scorer(Component, Protocol):
    def score(self, query: FeedQuery, candidates: Candidates) -> None:
        """Set this scorer's part or factor column."""
        ...


class Reranker(Component, Protocol):
    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        """The candidates (scored, best first) reordered, best first; scores may be adjusted."""
        ...


class SideEffect(Component, Protocol):
    async def run(self, query: FeedQuery, selected: list[RankedPost]) -> None:
        """Work that needs the result but not the response (recording, metrics)."""
        ...


class BaseComponent:
    """The defaults of every component: `name` set by the subclass, and enabled for every query."""

    name: str = ""

    def enabled(self, query: FeedQuery) -> bool:
        """Whether to run for this query (always, unless the component says otherwise)."""
        return True
