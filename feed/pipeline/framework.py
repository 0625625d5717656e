"""The candidate pipeline: stage protocols, the query and candidate types, and the runner.

Stage kinds and their semantics (after X's home mixer):
query hydrators run in parallel and fill the query; sources run in parallel and
return candidates; candidate hydrators add features; filters run in order and
drop candidates; scorers run in order and add score parts; rerankers reorder the
scored list; the selector keeps the top `limit`; side effects run after the
response, off its path. Every component has a `name` and `enabled(query)`, can be
switched off by name, and a failing one is logged and skipped, never fatal.

A run may start from an already ranked list instead (the rest of a feed session's
ranking, see `paging.py`): sources, scorers and rerankers are then skipped, and the
query hydrators, candidate hydrators and filters still run, so a post deleted or an
author blocked since the first page does not come back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

import numpy as np
import structlog

from feed.social_graph import SocialGraph
from feed.stores.feature_store import UserFeatures
from feed.stores.records import PostRecord

log = structlog.get_logger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound="Component")

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


@dataclass(slots=True)
class Candidate:
    """A post on its way through the pipeline.

    `parts` are additive score parts, `factors` multiply their sum; `score` is set by
    `Candidate.rescore()` after the scorers and adjusted by rerankers.
    """

    post_key: str
    source: str
    source_score: float = 0.0
    record: PostRecord | None = None
    counts: dict[str, float] = field(default_factory=dict)
    trending: float = 0.0  # decayed positive engagement now
    cf: np.ndarray | None = None  # item factors in the current CF model
    impressions: float = 0.0  # times the engine served the post
    author_reach: float = 0.0  # interactions the post's author has received
    in_network: bool = False
    parts: dict[str, float] = field(default_factory=dict)
    factors: dict[str, float] = field(default_factory=dict)
    score: float = 0.0

    def rescore(self) -> float:
        """score = (sum of parts) * (product of factors)."""
        self.score = sum(self.parts.values()) * math.prod(self.factors.values())
        return self.score


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
    async def fetch(self, query: FeedQuery) -> list[Candidate]:
        """Candidates from this source, at most its budget."""
        ...


class CandidateHydrator(Component, Protocol):
    async def hydrate(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        """Add features to the candidates in place."""
        ...


class Filter(Component, Protocol):
    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates to keep, in order."""
        ...


class Scorer(Component, Protocol):
    def score(self, query: FeedQuery, candidates: list[Candidate]) -> None:
        """Set this scorer's part or factor on every candidate."""
        ...


class Reranker(Component, Protocol):
    def rerank(self, query: FeedQuery, candidates: list[Candidate]) -> list[Candidate]:
        """The candidates reordered (scores may be adjusted), best first."""
        ...


class SideEffect(Component, Protocol):
    async def run(self, query: FeedQuery, selected: list[Candidate]) -> None:
        """Work that needs the result but not the response (recording, metrics)."""
        ...


@dataclass(slots=True)
class StageReport:
    """How one component ran for one request."""

    stage: str
    name: str
    ms: float
    count_in: int
    count_out: int
    status: str = "ok"  # ok | disabled | skipped | ranked_before | failed | timeout
    error: str | None = None


@dataclass(slots=True)
class FeedResult:
    """Selected candidates, best first, the per-component report, and the ranked candidates
    after the selected ones (what later pages of the session continue with)."""

    items: list[Candidate]
    stages: list[StageReport]
    rest: list[Candidate] = field(default_factory=list)


@dataclass
class Pipeline:
    """An explicit, ordered assembly of components (see `home_feed.py`)."""

    hydrators: Sequence[QueryHydrator] = ()
    sources: Sequence[Source] = ()
    candidate_hydrators: Sequence[CandidateHydrator] = ()
    filters: Sequence[Filter] = ()
    scorers: Sequence[Scorer] = ()
    rerankers: Sequence[Reranker] = ()
    side_effects: Sequence[SideEffect] = ()
    disabled: frozenset[str] = frozenset()
    source_timeout_s: float = 0.5
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def _inactive_status(self, component: Component, query: FeedQuery) -> str | None:
        if component.name in self.disabled:
            return "disabled"
        return None if component.enabled(query) else "skipped"

    def _enabled(
        self, stage: str, components: Sequence[C], query: FeedQuery, reports: list[StageReport], n: int
    ) -> list[C]:
        """The components to run; the others are reported as `disabled` (by configuration) or
        `skipped` (nothing to do for this query, e.g. Thunder for a user who follows no one)."""
        active: list[C] = []
        for component in components:
            status = self._inactive_status(component, query)
            if status:
                reports.append(StageReport(stage, component.name, 0.0, n, n, status=status))
            else:
                active.append(component)
        return active

    async def _timed(
        self,
        stage: str,
        component: Component,
        count_in: int,
        call: Callable[[], Awaitable[T]],
        timeout: float | None = None,
    ) -> tuple[T | None, StageReport]:
        start = time.perf_counter()
        report = StageReport(stage, component.name, 0.0, count_in, count_in)
        result: T | None = None
        try:
            result = await asyncio.wait_for(call(), timeout) if timeout else await call()
        except TimeoutError:
            report.status, report.error = "timeout", f"over {timeout}s"
            log.warning("stage_timeout", stage=stage, component=component.name)
        except Exception as exc:
            report.status, report.error = "failed", repr(exc)
            log.exception("stage_failed", stage=stage, component=component.name)
        report.ms = (time.perf_counter() - start) * 1000
        return result, report

    async def run(self, query: FeedQuery, ranked: list[Candidate] | None = None) -> FeedResult:
        """Run every enabled stage; returns the top `query.limit` candidates and the report.

        With `ranked` (scored earlier, best first), no source, scorer or reranker runs.
        """
        reports: list[StageReport] = []

        # Query hydrators, in parallel.
        hydrators = self._enabled("hydrator", self.hydrators, query, reports, 0)
        for _, report in await asyncio.gather(
            *(self._timed("hydrator", h, 0, partial(h.hydrate, query)) for h in hydrators)
        ):
            reports.append(report)

        if ranked is None:
            candidates = await self._fetch(query, reports)
        else:
            candidates = ranked
            self._ranked_before("source", self.sources, reports, len(ranked))

        # Candidate hydrators, in order (later ones may use earlier features).
        for ch in self._enabled(
            "candidate_hydrator", self.candidate_hydrators, query, reports, len(candidates)
        ):
            _, report = await self._timed(
                "candidate_hydrator", ch, len(candidates), partial(ch.hydrate, query, candidates)
            )
            reports.append(report)

        candidates = self._run_sync("filter", self.filters, query, candidates, reports, "apply")
        if ranked is None:
            self._run_sync("scorer", self.scorers, query, candidates, reports, "score")
            for c in candidates:
                c.rescore()
            candidates.sort(key=lambda c: c.score, reverse=True)
            candidates = self._run_sync("reranker", self.rerankers, query, candidates, reports, "rerank")
        else:
            self._ranked_before("scorer", self.scorers, reports, len(candidates))
            self._ranked_before("reranker", self.rerankers, reports, len(candidates))
        selected = candidates[: query.limit]

        for effect in self.side_effects:
            if not self._inactive_status(effect, query):
                task = asyncio.create_task(self._side_effect(effect, query, selected))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return FeedResult(selected, reports, candidates[query.limit :])

    async def _fetch(self, query: FeedQuery, reports: list[StageReport]) -> list[Candidate]:
        """Sources, in parallel, each with a timeout."""
        sources = self._enabled("source", self.sources, query, reports, 0)
        fetched = await asyncio.gather(
            *(self._timed("source", s, 0, partial(s.fetch, query), self.source_timeout_s) for s in sources)
        )
        candidates: list[Candidate] = []
        for found, report in fetched:
            report.count_out = len(found or [])
            reports.append(report)
            candidates.extend(found or [])
        return candidates

    @staticmethod
    def _ranked_before(
        stage: str, components: Sequence[Component], reports: list[StageReport], n: int
    ) -> None:
        reports.extend(StageReport(stage, c.name, 0.0, n, n, status="ranked_before") for c in components)

    def _run_sync(
        self,
        stage: str,
        components: Sequence[Filter] | Sequence[Scorer] | Sequence[Reranker],
        query: FeedQuery,
        candidates: list[Candidate],
        reports: list[StageReport],
        method: str,
    ) -> list[Candidate]:
        """Run filters / scorers / rerankers in order; a failing one leaves the list unchanged."""
        for component in components:
            n = len(candidates)
            status = self._inactive_status(component, query)
            if status:
                reports.append(StageReport(stage, component.name, 0.0, n, n, status=status))
                continue
            start = time.perf_counter()
            report = StageReport(stage, component.name, 0.0, n, n)
            try:
                out = getattr(component, method)(query, candidates)
                if out is not None:
                    candidates = out
            except Exception as exc:
                report.status, report.error = "failed", repr(exc)
                log.exception("stage_failed", stage=stage, component=component.name)
            report.ms = (time.perf_counter() - start) * 1000
            report.count_out = len(candidates)
            reports.append(report)
        return candidates

    async def _side_effect(self, effect: SideEffect, query: FeedQuery, selected: list[Candidate]) -> None:
        try:
            await effect.run(query, selected)
        except Exception:
            log.exception("side_effect_failed", component=effect.name)

    async def drain(self) -> None:
        """Wait for side effects still running (shutdown and tests)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
