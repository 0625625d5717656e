"""The engine's state as it was at an earlier time, rebuilt from the post records and the
interaction log, for the ranker's training ("what would the feed have ranked then?").

A snapshot at `t` holds what the event consumer would have built from the events before `t`
(the same maths: counts per action, trending with the configured half-life, author reach,
interest vectors by EMA, author affinity, seen and hidden sets), a CF model fitted on those
events only, and the posts created by `t`. The pipeline's sources and features then run on
it unchanged, so a training example carries the features it would have been served with.
What the log does not keep is missing: dwell lengths (a dwell counts as a zero-length one)
and impressions (zero), and the social graph is today's (the host keeps no history).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from feed.batch.cf import fit
from feed.config import HIDING_ACTIONS, NEGATIVE_ACTIONS, SOCIAL_ACTIONS, Settings
from feed.events.ema import action_weight, ema_update
from feed.stores.catalog.model import PostCatalog
from feed.stores.feature_store import UserFeatures
from feed.stores.index.vectors import RRF_K, Queries, VectorHit
from feed.stores.messages import LoggedInteraction
from feed.stores.records import PostRecord, short_vector_field, vector_field
from feed.stores.trending import TrendingBase

CF_VERSION = 1  # the only CF model a snapshot has


@dataclass
class Snapshot:
    """Catalogue, users and recent public engagements at time `at`."""

    at: float
    catalog: PostCatalog
    users: dict[str, UserFeatures] = field(default_factory=dict)
    engaged: dict[str, list[tuple[str, float]]] = field(
        default_factory=dict
    )  # user -> (post, ts), newest first


def build_snapshot(
    settings: Settings,
    dims: dict[str, int],
    posts: Sequence[PostRecord],
    events: Sequence[LoggedInteraction],
    at: float,
    users: Iterable[str],
    seed: int = 0,
) -> Snapshot:
    """The state at `at` from `events` (sorted by ts), with features for `users`."""
    ranking = settings.ranking
    catalog = PostCatalog(dims, capacity=max(len(posts), 1), horizons_s=ranking.trending_horizons_s)
    catalog.upsert(p for p in posts if p.created_at <= at)
    before = [e for e in events if e.ts < at and e.post in catalog.rows]
    author_of = {p.key: p.author_key for p in posts}

    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    trending: dict[str, float] = defaultdict(float)
    bases = [TrendingBase(at, h) for h in ranking.trending_horizons_s]
    horizons: list[dict[str, float]] = [defaultdict(float) for _ in bases]
    reach: dict[str, float] = defaultdict(float)
    base = TrendingBase(at, ranking.trending_half_life_s)
    confidence: dict[tuple[str, str], float] = defaultdict(float)
    for e in before:
        weight = action_weight(e.action, None, ranking)
        counts[e.post][e.action] += 1
        reach[author_of[e.post]] += 1
        confidence[e.user, e.post] += weight
        if weight > 0.0 and e.action not in NEGATIVE_ACTIONS:
            trending[e.post] += base.units(weight, e.ts)
            for horizon, scores in zip(bases, horizons, strict=True):
                scores[e.post] += horizon.units(weight, e.ts)
    catalog.set_counts(counts)
    catalog.set_trending(base, trending, reset=True)
    catalog.set_horizons(bases, horizons, reset=True)
    catalog.set_reach(reach)

    positive = {pair: c for pair, c in confidence.items() if c > 0}
    user_factors: dict[str, np.ndarray] = {}
    if positive:
        user_factors, item_factors = fit(positive, settings, seed)
        catalog.set_cf(CF_VERSION, item_factors, settings.cf_factors)

    snapshot = Snapshot(at, catalog)
    wanted = set(users)
    by_user: dict[str, list[LoggedInteraction]] = defaultdict(list)
    for e in before:
        by_user[e.user].append(e)
    for user in wanted:
        snapshot.users[user] = _user_features(settings, catalog, by_user.get(user, []), author_of)
        if user in user_factors:
            snapshot.users[user] = dataclasses.replace(
                snapshot.users[user], cf=user_factors[user], cf_version=CF_VERSION
            )
    for user, history in by_user.items():
        engaged = _public_engagements(history, settings.social_engaged_keep)
        if engaged:
            snapshot.engaged[user] = engaged
    return snapshot


def _user_features(
    settings: Settings, catalog: PostCatalog, history: list[LoggedInteraction], author_of: dict[str, str]
) -> UserFeatures:
    """What the event applier would hold for a user after `history` (in time order)."""
    ranking = settings.ranking
    horizons = ((vector_field, ranking.ema_rate), (short_vector_field, ranking.short_ema_rate))
    vectors: dict[str, np.ndarray | None] = {}
    affinity: dict[str, float] = defaultdict(float)
    hidden: set[str] = set()
    for e in history:
        weight = action_weight(e.action, None, ranking)
        row = catalog.rows[e.post]
        for space, has in catalog.has.items():
            if has[row]:
                post_vector = catalog.gather(space, np.array([row]))[0]
                for field_of, rate in horizons:
                    name = field_of(space)
                    vectors[name] = ema_update(vectors.get(name), post_vector, weight, rate)
        author = author_of[e.post]
        if weight != 0.0:
            affinity[author] += weight
        if e.action in HIDING_ACTIONS:
            hidden.add(author)
    long_term = {s: v for s in catalog.vectors if (v := vectors.get(vector_field(s))) is not None}
    short_term = {s: v for s in catalog.vectors if (v := vectors.get(short_vector_field(s))) is not None}
    seen = [e.post for e in reversed(history)][: settings.seen_max]
    return UserFeatures(
        vectors=long_term,
        short_vectors=short_term,
        events=len(history),
        seen=frozenset(seen),
        affinity=dict(affinity),
        hidden_authors=frozenset(hidden),
    )


def _public_engagements(history: list[LoggedInteraction], keep: int) -> list[tuple[str, float]]:
    """The user's newest `keep` public engagements (post, ts), newest first, as the event applier
    keeps them: a later negative action on the post takes it back."""
    latest: dict[str, float] = {}
    for e in history:
        if e.action in SOCIAL_ACTIONS:
            latest[e.post] = e.ts
        elif e.action in NEGATIVE_ACTIONS:
            latest.pop(e.post, None)
    return sorted(latest.items(), key=lambda item: -item[1])[:keep]


class SnapshotIndex:
    """Exact nearest-neighbour search over a snapshot's catalogue: the answers the vector index
    would have given then (the same fusion of several queries by reciprocal rank)."""

    def __init__(self, catalog: PostCatalog) -> None:
        self._catalog = catalog

    def _allowed(self, exclude_authors: list[str]) -> np.ndarray:
        catalog = self._catalog
        n = len(catalog.keys)
        allowed = catalog.alive[:n].copy()
        codes = catalog.authors_of(frozenset(exclude_authors))
        if len(codes):
            allowed &= ~catalog.author_mask(codes)[catalog.author[:n]]
        return allowed

    def _top(self, scores: np.ndarray, limit: int) -> np.ndarray:
        k = min(limit, int(np.isfinite(scores).sum()))
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top], kind="stable")]

    async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        catalog = self._catalog
        n = len(catalog.keys)
        allowed = self._allowed(exclude_authors)
        fused: dict[int, float] = defaultdict(float)
        lists = []
        for space, vector in queries:
            if space not in catalog.vectors:
                continue
            scores = np.where(
                allowed & catalog.has[space][:n],
                catalog.dots(space, np.arange(n), vector[None])[:, 0],
                -np.inf,
            )
            lists.append((self._top(scores, limit), scores))
        if len(lists) == 1:
            top, scores = lists[0]
            return [VectorHit(catalog.keys[r], float(scores[r])) for r in top.tolist()]
        for top, _ in lists:
            for rank, row in enumerate(top.tolist()):
                fused[row] += 1.0 / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda item: -item[1])[:limit]
        return [VectorHit(catalog.keys[r], s) for r, s in best]

    async def nearest_cf(
        self, user: np.ndarray, version: int, limit: int, exclude_authors: list[str]
    ) -> list[VectorHit]:
        catalog = self._catalog
        if catalog.cf is None or version != catalog.cf_version:
            return []
        n = len(catalog.keys)
        allowed = self._allowed(exclude_authors) & catalog.cf_known[:n]
        scores = np.where(allowed, catalog.cf[:n] @ user, -np.inf)
        return [VectorHit(catalog.keys[r], float(scores[r])) for r in self._top(scores, limit).tolist()]


class SnapshotEngagements:
    """The social source's reads, answered from a snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    async def recent_engagements(self, user_keys: list[str], per_user: int) -> dict[str, tuple[int, float]]:
        """post key -> (how many of these users engaged with it, the newest such time)."""
        out: dict[str, tuple[int, float]] = {}
        for user in user_keys:
            for post, ts in self._snapshot.engaged.get(user, [])[:per_user]:
                n, newest = out.get(post, (0, 0.0))
                out[post] = (n + 1, max(newest, ts))
        return out
