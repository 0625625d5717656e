"""The runner: runs a pipeline's components stage by stage for one query.

An explicit, ordered assembly of components (`home_feed.py`) runs as `components.py`
describes: each component can be switched off by name, and a failing one is logged and
reported, never fatal. A run may start from an already ranked batch instead (`rank` with
`ranked`: whoever kept it, a feed session or a cache, decides when): sources, scorers and
rerankers are then skipped, and the candidate hydrators and filters still run, so a post
deleted or an author blocked since does not come back. The runner keeps nothing between
runs: sessions and caches belong to the paging layer (`paging.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
import structlog

from feed.logging import log_failure
from feed.pipeline.candidates import Candidates, RankedPost, ranked_posts
from feed.pipeline.components import (
    CandidateHydrator,
    Component,
    FeedQuery,
    Filter,
    QueryHydrator,
    Reranker,
    Scorer,
    SideEffect,
    Source,
)
from feed.stores.catalog.model import PostCatalog

log = structlog.get_logger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound=Component)


@dataclass(slots=True)
class StageReport:
    """How one component ran for one request."""

    stage: str
    name: str
    ms: float
    count_in: int
    count_out: int
    status: str = "ok"  # ok | disabled | skipped | ranked_before | cached | failed | timeout
    error: str | None = None


@dataclass(slots=True)
class FeedResult:
    """Selected posts, best first, the per-component report, up to `keep` ranked posts after the
    selected ones (what later pages of the session continue with), and the whole reranked batch
    when this run ranked it (None when it started from a ranked batch), for a caller to keep."""

    items: list[RankedPost]
    stages: list[StageReport]
    rest: Candidates | None = None
    ranked: Candidates | None = None


@dataclass
class Pipeline:
    """An explicit, ordered assembly of components (see `home_feed.py`) over a post catalogue."""

    catalog: PostCatalog
    hydrators: Sequence[QueryHydrator] = ()
    sources: Sequence[Source] = ()
    candidate_hydrators: Sequence[CandidateHydrator] = ()
    filters: Sequence[Filter] = ()
    scorers: Sequence[Scorer] = ()
    rerankers: Sequence[Reranker] = ()
    side_effects: Sequence[SideEffect] = ()
    disabled: frozenset[str] = frozenset()
    source_timeout_s: float = 0.5
    rerank_window: int = 1000  # rerankers see this many best-scored candidates; the rest drop
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
            log_failure(log, "stage_failed", exc, stage=stage, component=component.name)
        report.ms = (time.perf_counter() - start) * 1000
        return result, report

    def _sync(
        self, stage: str, component: Component, count_in: int, call: Callable[[], T]
    ) -> tuple[T | None, StageReport]:
        start = time.perf_counter()
        report = StageReport(stage, component.name, 0.0, count_in, count_in)
        result: T | None = None
        try:
            result = call()
        except Exception as exc:
            report.status, report.error = "failed", repr(exc)
            log.exception("stage_failed", stage=stage, component=component.name)
        report.ms = (time.perf_counter() - start) * 1000
        return result, report

    async def run(self, query: FeedQuery, ranked: Candidates | None = None, keep: int = 0) -> FeedResult:
        """`hydrate` the query, then `rank`."""
        reports = await self.hydrate(query)
        return await self.rank(query, reports, ranked, keep=keep)

    async def hydrate(self, query: FeedQuery) -> list[StageReport]:
        """Run the query hydrators, in parallel; returns their reports."""
        reports: list[StageReport] = []
        hydrators = self._enabled("hydrator", self.hydrators, query, reports, 0)
        for _, report in await asyncio.gather(
            *(self._timed("hydrator", h, 0, partial(h.hydrate, query)) for h in hydrators)
        ):
            reports.append(report)
        return reports

    async def rank(
        self,
        query: FeedQuery,
        reports: list[StageReport],
        ranked: Candidates | None = None,
        ranked_status: str = "ranked_before",
        keep: int = 0,
    ) -> FeedResult:
        """Every stage after the query hydrators (whose `reports` it extends); returns the top
        `query.limit` posts, the `keep` after them, and the report.

        With `ranked` (scored earlier, best first), no source, scorer or reranker runs: they
        are reported with `ranked_status`.
        """
        if ranked is None:
            candidates = await self._fetch(query, reports)
        else:
            candidates = ranked
            self._ranked_before("source", self.sources, reports, len(ranked), ranked_status)

        # Candidate hydrators, in order (later ones may use earlier features).
        for ch in self._enabled(
            "candidate_hydrator", self.candidate_hydrators, query, reports, len(candidates)
        ):
            _, report = await self._timed(
                "candidate_hydrator", ch, len(candidates), partial(ch.hydrate, query, candidates)
            )
            reports.append(report)

        candidates = self._filter(query, candidates, reports)
        fresh: Candidates | None = None
        if ranked is None:
            n = len(candidates)
            for scorer in self._enabled("scorer", self.scorers, query, reports, n):
                _, report = self._sync("scorer", scorer, n, partial(scorer.score, query, candidates))
                reports.append(report)
            candidates.rescore()
            candidates = candidates.top(self.rerank_window)
            n = len(candidates)
            for reranker in self._enabled("reranker", self.rerankers, query, reports, n):
                out, report = self._sync("reranker", reranker, n, partial(reranker.rerank, query, candidates))
                candidates = out if out is not None else candidates
                reports.append(report)
            fresh = candidates
        else:
            self._ranked_before("scorer", self.scorers, reports, len(candidates), ranked_status)
            self._ranked_before("reranker", self.rerankers, reports, len(candidates), ranked_status)
        selected = ranked_posts(self.catalog, candidates.take(slice(0, query.limit)))
        rest = candidates.take(slice(query.limit, query.limit + keep))
        rest = rest.take(rest.known())

        for effect in self.side_effects:
            if not self._inactive_status(effect, query):
                task = asyncio.create_task(self._side_effect(effect, query, selected))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return FeedResult(selected, reports, rest, fresh)

    async def _fetch(self, query: FeedQuery, reports: list[StageReport]) -> Candidates:
        """Sources, in parallel, each with a timeout."""
        sources = self._enabled("source", self.sources, query, reports, 0)
        fetched = await asyncio.gather(
            *(self._timed("source", s, 0, partial(s.fetch, query), self.source_timeout_s) for s in sources)
        )
        batches: list[Candidates] = []
        for found, report in fetched:
            report.count_out = len(found) if found is not None else 0
            reports.append(report)
            if found is not None:
                batches.append(found)
        return Candidates.concat(batches)

    def _filter(self, query: FeedQuery, candidates: Candidates, reports: list[StageReport]) -> Candidates:
        """Filters, in order: each judges the whole batch, and what any of them rejects is
        dropped once at the end (count_out is what is left after each); a failing one rejects
        nothing."""
        keep = np.ones(len(candidates), dtype=bool)
        for flt in self._enabled("filter", self.filters, query, reports, len(candidates)):
            n = int(keep.sum())
            mask, report = self._sync("filter", flt, n, partial(flt.apply, query, candidates))
            if mask is not None:
                keep &= mask
            report.count_out = int(keep.sum())
            reports.append(report)
        return candidates if keep.all() else candidates.take(keep)

    @staticmethod
    def _ranked_before(
        stage: str, components: Sequence[Component], reports: list[StageReport], n: int, status: str
    ) -> None:
        reports.extend(StageReport(stage, c.name, 0.0, n, n, status=status) for c in components)

    async def _side_effect(self, effect: SideEffect, query: FeedQuery, selected: list[RankedPost]) -> None:
        try:
            await effect.run(query, selected)
        except Exception:
            log.exception("side_effect_failed", component=effect.name)

    async def drain(self) -> None:
        """Wait for side effects still running (shutdown and tests)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
