"""The learned ranker's features: one float32 row per candidate, from what the pipeline already has.

The same function serves the API (the `LearnedRanker` reranker) and the batch layer's
training, which replays the same pipeline over a point-in-time catalogue, so a model is
trained on exactly the features it will be served with. Missing values are NaN (a post
sharing no embedding space with the user, a post the CF model does not know), which
LightGBM routes on their own. Counts enter as logs and rates, so a model does not hinge on
the raw scale of one deployment's traffic; every deployment trains its own model anyway.
"""

from __future__ import annotations

import zlib

import numpy as np

from feed.config import RankingConfig
from feed.pipeline.candidates import Candidates, required
from feed.pipeline.components import BaseComponent, FeedQuery
from feed.stores.catalog.model import ACTIONS, NO_ROW, PostCatalog
from feed.stores.records import SPACES

# Sources a candidate can be found by, as bits of `Candidates.found_by` (names from home_feed.py).
SOURCE_BITS: tuple[str, ...] = (
    "thunder",
    "social",
    "phoenix",
    "collaborative",
    "trending",
    "popular",
    "fresh",
)
SOCIAL_SOURCE = "social"

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
# positive engagement decayed at each of the catalogue's extra trending horizons (by default
# 3, 30 and 365 days): which horizon predicts engagement differs by a factor of 100 between a
# social network and a catalogue, so all are offered and the model weighs them
HORIZON_FEATURES: tuple[str, ...] = tuple(
    f"log_trending_{round(h / DAY_S)}d" for h in RankingConfig().trending_horizons_s
)
ENGAGEMENT_PRIOR = 10.0  # pseudo-interactions smoothing each post's per-action rates

FEATURES: tuple[str, ...] = (
    *(f"sim_{space}{horizon}" for space in SPACES for horizon in ("", "_short")),
    *(f"rate_{action}" for action in ACTIONS),
    "log_interactions",
    "log_positive",
    "log_negative",
    "log_trending",
    "trending_rel",
    *HORIZON_FEATURES,
    "cf",
    "cf_rank",
    "sim_rank",
    "affinity",
    "author_share",
    "log_age_h",
    "in_network",
    *(f"src_{name}" for name in SOURCE_BITS),
    "sources",
    "followees_engaged",
    "log_author_reach",
    "log_impressions",
    "log_user_events",
    "prerank",
)
COLUMN = {name: i for i, name in enumerate(FEATURES)}
# names and order of FEATURES in one number, kept with logged rows: a release that changes
# FEATURES must not have its model trained on rows whose columns meant something else
LAYOUT = zlib.crc32(",".join(FEATURES).encode())


def user_cosines(catalog: PostCatalog, rows: np.ndarray, known: np.ndarray, query: FeedQuery) -> np.ndarray:
    """(n, 2 * len(SPACES)) float32: cos(user vector, post vector) per space and horizon (long-
    and short-term, in that order), NaN if either lacks it. `rows` must be valid where `known`."""
    out = np.full((len(rows), 2 * len(SPACES)), np.nan, dtype=np.float32)
    horizons = (query.user.vectors, query.user.short_vectors)
    for s, space in enumerate(SPACES):
        if space not in catalog.vectors:
            continue
        has = catalog.has[space][rows] & known
        if not has.any():
            continue
        users = [(h, user[space]) for h, user in enumerate(horizons) if space in user]
        if users:
            products = catalog.dots(space, rows[has], np.stack([v for _, v in users]))
            for (h, _), cos in zip(users, products.T, strict=True):
                out[has, 2 * s + h] = cos
    return out


def window_rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank among the finite values of the batch, scaled to [0, 1] (1: the highest);
    NaN stays NaN, ties share a rank. Raw CF preferences and cosines are on a different scale
    for every user (a long history makes them larger), so a model that compares them across
    users learns little from them; their order within the user's own window is comparable."""
    out = np.full(len(values), np.nan, dtype=np.float32)
    finite = np.isfinite(values)
    m = int(finite.sum())
    if m:
        kept = values[finite]
        below = np.searchsorted(np.sort(kept), kept, side="right") - 1  # ties share the higher rank
        out[finite] = below / max(m - 1, 1)
    return out


def action_weight_vector(action_weights: dict[str, float]) -> np.ndarray:
    """The configured weight of each action, in the catalogue's counts column order."""
    return np.array([action_weights.get(a, 0.0) for a in ACTIONS])


def feature_matrix(
    catalog: PostCatalog, query: FeedQuery, candidates: Candidates, action_weights: np.ndarray
) -> np.ndarray:
    """(len(candidates), len(FEATURES)) float32, in FEATURES order; `candidates.score` is the
    hand-set formula's score (the pre-rank), as it stands when the learned ranker runs;
    `action_weights` per counts column (`action_weight_vector`) weigh positive and negative
    engagement."""
    n = len(candidates)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    known = candidates.known()
    rows = np.where(known, candidates.rows, 0)
    # the similarity scorer's when it ran (the same cosines), else computed here
    x[:, : 2 * len(SPACES)] = (
        candidates.cosines if candidates.cosines is not None else user_cosines(catalog, rows, known, query)
    )

    counts = required(candidates.counts, "counts").astype(np.float64)
    total = counts.sum(axis=1)
    first = COLUMN[f"rate_{ACTIONS[0]}"]
    x[:, first : first + len(ACTIONS)] = counts / (total + ENGAGEMENT_PRIOR)[:, None]
    x[:, COLUMN["log_interactions"]] = np.log1p(total)
    x[:, COLUMN["log_positive"]] = np.log1p(counts @ np.maximum(action_weights, 0.0))
    x[:, COLUMN["log_negative"]] = np.log1p(counts @ np.maximum(-action_weights, 0.0))

    trending = required(candidates.trending, "trending")
    x[:, COLUMN["log_trending"]] = np.log1p(trending)
    top = float(trending.max()) if n else 0.0
    x[:, COLUMN["trending_rel"]] = trending / top if top > 0 else 0.0
    horizons = catalog.horizon_values(rows, query.now)
    horizons[~known] = 0.0
    first = COLUMN[HORIZON_FEATURES[0]] if HORIZON_FEATURES else 0
    width = min(horizons.shape[1], len(HORIZON_FEATURES))  # a catalogue configured with fewer
    x[:, first : first + width] = np.log1p(horizons[:, :width])

    cf = np.full(n, np.nan)
    if query.user.cf is not None and candidates.cf is not None and candidates.cf_known is not None:
        cf = np.where(candidates.cf_known, candidates.cf @ query.user.cf, np.nan)
    x[:, COLUMN["cf"]] = cf
    x[:, COLUMN["cf_rank"]] = window_rank(cf)
    cosines = x[:, : 2 * len(SPACES)]
    has_cosine = np.isfinite(cosines).any(axis=1)
    best = np.full(n, np.nan)
    if has_cosine.any():
        best[has_cosine] = np.nanmax(cosines[has_cosine], axis=1)
    x[:, COLUMN["sim_rank"]] = window_rank(best)

    author = required(candidates.author, "author")
    affinity = np.zeros(n)
    if query.user.affinity:
        by_author = np.zeros(len(catalog.author_keys) + 1)  # the last entry answers NO_ROW (-1)
        for key, value in query.user.affinity.items():
            code = catalog.author_codes.get(key)
            if code is not None:
                by_author[code] = value
        affinity = by_author[author]
        positive = sum(v for v in query.user.affinity.values() if v > 0)
        x[:, COLUMN["author_share"]] = np.maximum(affinity, 0.0) / positive if positive > 0 else 0.0
    x[:, COLUMN["affinity"]] = affinity

    age = np.maximum(query.now - required(candidates.created_at, "created_at"), 0.0)
    x[:, COLUMN["log_age_h"]] = np.log1p(np.where(np.isfinite(age), age, 0.0) / HOUR_S)
    x[:, COLUMN["in_network"]] = candidates.in_network

    found_by = required(candidates.found_by, "found_by")
    for i, name in enumerate(SOURCE_BITS):
        x[:, COLUMN[f"src_{name}"]] = (found_by >> i) & 1
    x[:, COLUMN["sources"]] = np.bitwise_count(found_by.astype(np.uint64))
    x[:, COLUMN["followees_engaged"]] = required(candidates.followees_engaged, "followees_engaged")

    x[:, COLUMN["log_author_reach"]] = np.log1p(required(candidates.author_reach, "author_reach"))
    x[:, COLUMN["log_impressions"]] = np.log1p(required(candidates.impressions, "impressions"))
    x[:, COLUMN["log_user_events"]] = np.log1p(query.user.events)
    x[:, COLUMN["prerank"]] = candidates.score
    return x


def attach_features(
    catalog: PostCatalog, query: FeedQuery, candidates: Candidates, action_weights: np.ndarray
) -> np.ndarray:
    """Set `candidates.features` to the batch's feature matrix (as `feature_matrix`) and return it:
    computed once where the window is ranked, and carried with the candidates to the served page,
    whose rows are logged (`LogServedFeaturesSideEffect`)."""
    candidates.features = feature_matrix(catalog, query, candidates, action_weights)
    return candidates.features


class FeatureLogger(BaseComponent):
    """Attaches the features to the window when the learned ranker did not (no model deployed,
    switched off, failed), so the formula's pages are logged with their features too.

    Stands right after the learned ranker: `score` is still the formula's there (the `prerank`
    feature), and the batch is the window the ranker would have scored (`trending_rel` is
    relative to it). Not for previews, which are never logged.
    """

    name = "feature_logger"

    def __init__(self, catalog: PostCatalog, action_weights: dict[str, float]) -> None:
        self._catalog = catalog
        self._weights = action_weight_vector(action_weights)

    def enabled(self, query: FeedQuery) -> bool:
        return not query.preview

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        if candidates.features is None:
            attach_features(self._catalog, query, candidates, self._weights)
        return candidates


def source_columns(candidates: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the bits of every source that returned its post (duplicates included,
    before the duplicate filter keeps one copy), and how many followees engaged with it (the
    social source's score)."""
    n = len(candidates)
    rows = candidates.rows
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    bit_of_source = np.array(
        [1 << SOURCE_BITS.index(s) if s in SOURCE_BITS else 0 for s in candidates.source_names],
        dtype=np.int64,
    )
    bits = bit_of_source[candidates.source]
    unique, inverse = np.unique(rows, return_inverse=True)
    found = np.zeros(len(unique), dtype=np.int64)
    np.bitwise_or.at(found, inverse, bits)
    social = np.zeros(len(unique))
    social_source = np.array([name == SOCIAL_SOURCE for name in candidates.source_names], dtype=bool)
    is_social = social_source[candidates.source] if len(social_source) else np.zeros(n, dtype=bool)
    np.maximum.at(social, inverse[is_social], candidates.source_score[is_social])
    found_by, followees = found[inverse], social[inverse]
    unknown = rows == NO_ROW
    followees[unknown] = 0.0
    return found_by, followees
