"""The candidate pipeline: stage protocols, the query and candidate types, and the runner.

Stage kinds and their semantics (after X's home mixer):
query hydrators run in parallel and fill the query; sources run in parallel and
return candidates; candidate hydrators add feature columns; filters run in order and
drop candidates; scorers run in order and add score parts; rerankers reorder the
best `rerank_window` of the scored list; the selector keeps the top `limit`; side
effects run after the response, off its path. Every component has a `name` and
`enabled(query)`, can be switched off by name, and a failing one is logged and
skipped, never fatal. Candidates travel as one columnar batch (`Candidates`: rows of
the post catalogue and a numpy column per feature and score part); `RankedPost`
objects exist only for the page.

A run may start from an already ranked list instead (the rest of a feed session's
ranking, see `paging.py`, or a hot user's kept ranking, see `ranking_cache.py`):
sources, scorers and rerankers are then skipped, and the query hydrators, candidate
hydrators and filters still run, so a post deleted or an author blocked since does
not come back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import structlog

from feed.logging import log_failure
from feed.social_graph import SocialGraph

if TYPE_CHECKING:
    from feed.pipeline.ranking_cache import RankingCache
from feed.stores.catalog import NO_ROW, PostCatalog
from feed.stores.feature_store import UserFeatures

log = structlog.get_logger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound="Component")

NO_USER = UserFeatures(vectors={}, events=0, seen=frozenset(), affinity={})
_EMPTY = np.empty(0)


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


@dataclass(slots=True)
class Candidates:
    """The candidates of one request as aligned columns: entry i of every array is candidate i.

    `rows` are post catalogue rows (NO_ROW for a post the catalogue does not have); `source`
    indexes `source_names`. Candidate hydrators fill the feature columns (None until then),
    scorers add `parts` (summed) and `factors` (multiplied), and `rescore()` sets
    `score = sum(parts) * prod(factors)`. Selecting, filtering and reordering all go
    through `take`, which indexes every column at once.
    """

    rows: np.ndarray
    source: np.ndarray
    source_score: np.ndarray
    in_network: np.ndarray
    source_names: tuple[str, ...] = ()
    author: np.ndarray | None = None  # author code in the catalogue (NO_ROW: unknown)
    alive: np.ndarray | None = None  # the post is in the catalogue
    created_at: np.ndarray | None = None
    counts: np.ndarray | None = None  # (n, len(ACTIONS)) interactions per action
    trending: np.ndarray | None = None  # decayed positive engagement now
    impressions: np.ndarray | None = None  # times the engine served the post
    author_reach: np.ndarray | None = None  # interactions the post's author has received
    cf: np.ndarray | None = None  # (n, factors) item factors of the user's CF model
    cf_known: np.ndarray | None = None  # the model has factors for the post
    texts: np.ndarray | None = None  # (object) text, transcript and detected objects, when needed
    found_by: np.ndarray | None = None  # bit i set: source SOURCE_BITS[i] returned the post
    followees_engaged: np.ndarray | None = None  # people the user follows who engaged with it
    # (n, 2 * len(SPACES)) float32: cos(user vector, post vector) per space and horizon (long,
    # short), NaN where either lacks it; the similarity scorer's, reused by the ranker's features
    cosines: np.ndarray | None = None
    # (n, len(FEATURES)) float32: the learned ranker's features as the batch was ranked with them
    # (`features.attach_features`), logged with the page; None until a reranker attaches them
    features: np.ndarray | None = None
    ranker_version: int = 0  # the learned model that ranked the batch (0: the hand-set formula)
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray = field(default_factory=lambda: _EMPTY)
    # per-feature contributions to the learned ranker's score (NaN where not computed); not summed
    contributions: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        rows: np.ndarray,
        source: str,
        source_score: np.ndarray | None = None,
        in_network: bool = False,
    ) -> Candidates:
        """A batch from one source."""
        n = len(rows)
        return cls(
            rows=np.asarray(rows, dtype=np.int64),
            source=np.zeros(n, dtype=np.int16),
            source_score=np.zeros(n) if source_score is None else np.asarray(source_score, dtype=np.float64),
            in_network=np.full(n, in_network),
            source_names=(source,),
            score=np.zeros(n),
        )

    @classmethod
    def concat(cls, batches: Sequence[Candidates]) -> Candidates:
        """Source batches one after the other, with their parts and factors (a batch without
        one gets the neutral value: 0 for a part, 1 for a factor)."""
        if not batches:
            return cls.of(np.empty(0, dtype=np.int64), "none")
        names = tuple(name for b in batches for name in b.source_names)
        offsets = np.cumsum([0, *(len(b.source_names) for b in batches)])

        def joined(attr: str, neutral: float) -> dict[str, np.ndarray]:
            columns = sorted({k for b in batches for k in getattr(b, attr)})
            return {
                k: np.concatenate([getattr(b, attr).get(k, np.full(len(b), neutral)) for b in batches])
                for k in columns
            }

        return cls(
            rows=np.concatenate([b.rows for b in batches]),
            source=np.concatenate([b.source + o for b, o in zip(batches, offsets, strict=False)]),
            source_score=np.concatenate([b.source_score for b in batches]),
            in_network=np.concatenate([b.in_network for b in batches]),
            source_names=names,
            parts=joined("parts", 0.0),
            factors=joined("factors", 1.0),
            score=np.concatenate([b.score for b in batches]),
        )

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray | slice) -> Candidates:
        """The candidates at `index` (positions, a boolean mask or a slice), in its order."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value[index]
            elif isinstance(value, dict):
                value = {k: v[index] for k, v in value.items()}
            out[f.name] = value
        return Candidates(**out)

    def rescore(self) -> np.ndarray:
        """score = (sum of parts) * (product of factors); returns it."""
        total = np.zeros(len(self))
        for part in self.parts.values():
            total += part
        for factor in self.factors.values():
            total *= factor
        self.score = total
        return total

    def known(self) -> np.ndarray:
        """Mask of candidates the catalogue has."""
        return np.asarray(self.rows != NO_ROW)

    def sort(self) -> Candidates:
        """By score, best first (ties keep their order)."""
        return self.take(np.argsort(-self.score, kind="stable"))

    def top(self, k: int) -> Candidates:
        """The `k` best by score, best first (ties keep their order), without sorting the rest."""
        if len(self) <= k:
            return self.sort()
        best = np.argpartition(-self.score, k - 1)[:k]
        return self.take(best[np.lexsort((best, -self.score[best]))])


def required(column: np.ndarray | None, name: str) -> np.ndarray:
    """A feature column a stage needs; raises (the stage fails and is skipped) when the
    candidate hydrator that fills it is switched off."""
    if column is None:
        raise RuntimeError(f"needs the `{name}` column (its candidate hydrator is off)")
    return column


@dataclass(frozen=True, slots=True)
class RankedPost:
    """A ranked candidate as the pipeline hands it out: the post, its source and score parts."""

    post_key: str
    post_id: int | str
    author_id: int | str
    source: str
    score: float
    parts: dict[str, float]
    factors: dict[str, float]
    in_network: bool = False
    contributions: dict[str, float] = field(default_factory=dict)
    features: np.ndarray | None = field(default=None, compare=False, repr=False)  # its row of the batch's
    ranker_version: int = 0  # the batch's


def ranked_posts(catalog: PostCatalog, batch: Candidates) -> list[RankedPost]:
    """The batch's known candidates as `RankedPost`s, in order."""
    batch = batch.take(batch.known())
    n = len(batch)

    def per_item(columns: dict[str, np.ndarray]) -> list[dict[str, float]]:
        if not columns:
            return [{} for _ in range(n)]
        names = list(columns)
        return [
            {k: v for k, v in zip(names, values, strict=True) if v == v}  # NaN: not computed
            for values in np.column_stack(list(columns.values())).tolist()
        ]

    keys, post_ids, author_ids = catalog.keys, catalog.post_ids, catalog.author_ids
    features = [None] * n if batch.features is None else list(batch.features)
    return [
        RankedPost(
            keys[row],
            post_ids[row],
            author_ids[author],
            batch.source_names[source],
            score,
            parts,
            factors,
            in_network,
            contributions,
            x,
            batch.ranker_version,
        )
        for row, author, source, score, in_network, parts, factors, contributions, x in zip(
            batch.rows.tolist(),
            catalog.author[batch.rows].tolist(),
            batch.source.tolist(),
            batch.score.tolist(),
            batch.in_network.tolist(),
            per_item(batch.parts),
            per_item(batch.factors),
            per_item(batch.contributions),
            features,
            strict=True,
        )
    ]


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
    """Selected posts, best first, the per-component report, and up to `keep` ranked posts
    after the selected ones (what later pages of the session continue with)."""

    items: list[RankedPost]
    stages: list[StageReport]
    rest: Candidates | None = None


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
    ranking_cache: RankingCache | None = None  # a hot user's new session starts from their last ranking
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
        """Run every enabled stage; returns the top `query.limit` posts, the `keep` after
        them, and the report.

        With `ranked` (scored earlier, best first), no source, scorer or reranker runs; nor
        when the ranking cache holds the user's ranking for a new session (status `cached`).
        A `query.preview` neither reads nor fills the ranking cache and runs no side effect.
        """
        reports: list[StageReport] = []

        # Query hydrators, in parallel.
        hydrators = self._enabled("hydrator", self.hydrators, query, reports, 0)
        for _, report in await asyncio.gather(
            *(self._timed("hydrator", h, 0, partial(h.hydrate, query)) for h in hydrators)
        ):
            reports.append(report)

        before = "ranked_before"
        if ranked is None and self.ranking_cache is not None and not query.preview:
            ranked = self.ranking_cache.get(query)
            before = "cached"
        if ranked is None:
            candidates = await self._fetch(query, reports)
        else:
            candidates = ranked
            self._ranked_before("source", self.sources, reports, len(ranked), before)

        # Candidate hydrators, in order (later ones may use earlier features).
        for ch in self._enabled(
            "candidate_hydrator", self.candidate_hydrators, query, reports, len(candidates)
        ):
            _, report = await self._timed(
                "candidate_hydrator", ch, len(candidates), partial(ch.hydrate, query, candidates)
            )
            reports.append(report)

        candidates = self._filter(query, candidates, reports)
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
            if self.ranking_cache is not None and not query.preview:
                self.ranking_cache.put(query, candidates)
        else:
            self._ranked_before("scorer", self.scorers, reports, len(candidates), before)
            self._ranked_before("reranker", self.rerankers, reports, len(candidates), before)
        selected = ranked_posts(self.catalog, candidates.take(slice(0, query.limit)))
        rest = candidates.take(slice(query.limit, query.limit + keep))
        rest = rest.take(rest.known())

        for effect in () if query.preview else self.side_effects:
            if not self._inactive_status(effect, query):
                task = asyncio.create_task(self._side_effect(effect, query, selected))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return FeedResult(selected, reports, rest)

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
