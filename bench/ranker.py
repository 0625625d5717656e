"""The learned ranker in the serving benchmark: a model of the shipped size, and its inference cost.

The model is trained with the trainer's own LightGBM parameters (`feed.batch.ranker.fit_params`:
lambdarank, `ranker_leaves` leaves) on synthetic feature rows (groups of candidates whose
labels are a noisy function of a few features), for exactly `ranker_max_trees` rounds (no
early stopping): the largest model the trainer can deploy. It is compiled into the API
processes' folder (`DATA_DIR/ranker`), so that a process loading it finds the object file.

The inference figures are measured in this process on one core (LightGBM and lleaves on one
thread, BLAS limited to one thread as the API limits it) on a rerank window built from the
benchmark's corpus: the catalogue loaded from Redis as an API process loads it, the user's
features from the feature store, candidates from the sources' kinds of retrieval (newest
posts of followed authors, nearest neighbours, trending, newest), hydrated by the pipeline's
candidate hydrators and ordered by the formula's similarity and engagement parts, the best
`rerank_window` kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
from redis.asyncio import Redis
from threadpoolctl import threadpool_limits

from feed.batch.ranker import MODEL_FEATURES, fit_params
from feed.config import Settings
from feed.pipeline.candidate_hydrators import (
    AuthorReachHydrator,
    CFFactorsHydrator,
    EngagementCountsHydrator,
    ImpressionsHydrator,
    PostFeaturesHydrator,
    SourcesHydrator,
    TrendingHydrator,
)
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import FeedQuery
from feed.pipeline.features import COLUMN, action_weight_vector, feature_matrix
from feed.pipeline.rerankers import LearnedRanker
from feed.pipeline.scorers import EngagementScorer, SimilarityScorer
from feed.ranking.model import RankerModel, RankerSlot
from feed.social_graph import SocialGraph
from feed.stores.catalog.model import PostCatalog
from feed.stores.catalog.sync import CatalogSync
from feed.stores.feature_store import FeatureStore
from feed.stores.index.vectors import space_dims
from feed.stores.ranker_store import RankerStore

ROWS = 1000  # the rerank window the requirement is stated for
PAGE = 50  # rows of a page whose contributions `explain` computes


def synthetic_groups(groups: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """`groups` groups of `size` rows of MODEL_FEATURES on roughly their served scales (logs up to
    6, rates and shares in [0, 1], cosines in [-0.3, 0.8] and sometimes missing, source bits),
    and grades 0..4 from a noisy function of a few of them: each group's best 3% 4, next 5% 3,
    next 10% 2, worst 5% 0, the rest 1 (nothing)."""
    rng = np.random.default_rng(seed)
    n = groups * size
    x = rng.random((n, len(MODEL_FEATURES)), dtype=np.float32)
    for j, name in enumerate(MODEL_FEATURES):
        if name.startswith("log_"):
            x[:, j] *= 6.0
        elif name.startswith("sim_"):
            x[:, j] = x[:, j] * 1.1 - 0.3
            x[rng.random(n) < 0.1, j] = np.nan
        elif name.startswith("src_") or name == "in_network":
            x[:, j] = x[:, j] < 0.3
        elif name == "sources":
            x[:, j] = 1 + rng.binomial(2, 0.2, n)
        elif name == "followees_engaged":
            x[:, j] = rng.poisson(0.3, n)
        elif name == "cf":
            x[rng.random(n) < 0.5, j] = np.nan
    f = {name: np.nan_to_num(x[:, j]) for j, name in enumerate(MODEL_FEATURES)}
    signal = (
        2.0 * f["sim_text"]
        + 3.0 * f["rate_like"]
        - 3.0 * f["rate_hide"]
        + 0.5 * f["in_network"]
        + 0.2 * f["log_trending"]
        + f["prerank"]
        + rng.normal(0.0, 0.7, n)
    )
    labels = np.ones(n, dtype=np.int64)
    for g in range(groups):
        order = np.argsort(-signal[g * size : (g + 1) * size]) + g * size
        cuts = np.cumsum([int(size * s) for s in (0.03, 0.05, 0.10)])
        labels[order[: cuts[0]]] = 4
        labels[order[cuts[0] : cuts[1]]] = 3
        labels[order[cuts[1] : cuts[2]]] = 2
        labels[order[size - int(size * 0.05) :]] = 0
    return x, labels, [size] * groups


def train_model(settings: Settings, groups: int = 300, size: int = 100, seed: int = 0) -> RankerModel:
    """A model of the size the trainer ships: its parameters, all `ranker_max_trees` rounds."""
    x, y, sizes = synthetic_groups(groups, size, seed)
    data = lgb.Dataset(x, y, group=sizes, feature_name=list(MODEL_FEATURES))
    booster = lgb.train(fit_params(settings, seed), data, num_boost_round=settings.ranking.ranker_max_trees)
    return RankerModel(int(time.time() * 1e6), MODEL_FEATURES, time.time(), booster)


async def deploy(settings: Settings, model: RankerModel) -> None:
    """Make `model` the serving one (as the trainer deploys it)."""
    redis = Redis.from_url(settings.redis_url)
    try:
        await RankerStore(redis).deploy(model.version, model.to_bytes())
    finally:
        await redis.aclose()


@dataclass
class Window:
    """A rerank window as the learned ranker receives it, and what it needs to rank it."""

    catalog: PostCatalog
    query: FeedQuery
    candidates: Candidates


async def build_window(settings: Settings, user_key: str, following: list[str], size: int = ROWS) -> Window:
    """The best `size` candidates of one user's feed over the catalogue in Redis (see the module's
    docstring), scored by the formula's similarity and engagement parts, best first."""
    r = settings.ranking
    redis = Redis.from_url(settings.redis_url)
    try:
        catalog = PostCatalog(space_dims(settings), horizons_s=r.trending_horizons_s)
        await CatalogSync(redis, catalog).load()
        user = await FeatureStore(redis).user_features(user_key)
    finally:
        await redis.aclose()
    graph = SocialGraph(following=frozenset(following))
    query = FeedQuery(user_key, user_key, PAGE, "bench", time.time(), user=user, graph=graph)
    n = len(catalog)
    newest = catalog.newest_by(catalog.authors_of(graph.following), 40, -np.inf)
    if "text" in user.vectors:
        cosines = catalog.gather("text", np.arange(n)) @ user.vectors["text"]
        nearest = np.argsort(-cosines)[: size // 4]
    else:
        nearest = np.zeros(0, dtype=np.int64)
    batches = [
        Candidates.of(newest[-size:], "thunder", in_network=True),
        Candidates.of(nearest, "phoenix"),
        Candidates.of(catalog.top_trending(size // 2), "trending"),
        Candidates.of(catalog.newest(size // 2), "fresh"),
    ]
    candidates = Candidates.concat(batches)
    await SourcesHydrator().hydrate(query, candidates)  # before duplicates go: every source's bit
    _, first = np.unique(candidates.rows, return_index=True)
    candidates = candidates.take(np.sort(first))
    hydrators = (
        PostFeaturesHydrator(catalog),
        EngagementCountsHydrator(catalog),
        TrendingHydrator(catalog),
        CFFactorsHydrator(catalog),
        ImpressionsHydrator(catalog),
        AuthorReachHydrator(catalog),
    )
    for hydrator in hydrators:
        if hydrator.enabled(query):
            await hydrator.hydrate(query, candidates)
    similarity = SimilarityScorer(catalog, r.similarity_weight, r.space_weights, r.short_term_share)
    similarity.score(query, candidates)
    EngagementScorer(r).score(query, candidates)
    candidates.rescore()
    return Window(catalog, query, candidates.top(size))


def percentiles(
    run: Callable[[], object], runs: int, before: Callable[[], object] | None = None
) -> dict[str, float]:
    """p50 and p99 ms of `run` over `runs` calls (`before` each, untimed)."""
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def measure(settings: Settings, model: RankerModel, window: Window, runs: int = 300) -> dict[str, Any]:
    """Inference figures of `model` (compiled: `model.compiled` set) on one core: predict for
    1,000 rows (the window's rows, repeated if it has fewer) through LightGBM and the compiled
    trees, the whole learned-ranker stage on the window (features, predict, sort), and
    contributions for a page."""
    assert model.compiled is not None, "measure the compiled model"
    weights = action_weight_vector(settings.ranking.action_weights)
    features = feature_matrix(window.catalog, window.query, window.candidates, weights)
    x = features[:, [COLUMN[f] for f in model.features]]
    x = np.resize(x, (ROWS, x.shape[1])) if len(x) < ROWS else x[:ROWS]
    lightgbm = RankerModel(model.version, model.features, model.trained_at, model.booster)
    ranker = LearnedRanker(window.catalog, RankerSlot(model), settings.ranking.action_weights)
    batch: list[Candidates] = []

    def fresh() -> None:  # the reranker replaces the score and the features: a new copy each time
        batch[:] = [window.candidates.take(np.arange(len(window.candidates)))]

    with threadpool_limits(1, "blas"):  # as the API process sets it
        return {
            "trees": model.booster.num_trees(),
            "leaves": settings.ranking.ranker_leaves,
            "features": len(model.features),
            "window": len(window.candidates),
            "predict_ms_1000": {
                "lightgbm": percentiles(lambda: lightgbm.predict(x), runs),
                "compiled": percentiles(lambda: model.predict(x), runs),
            },
            "rerank_ms_1000": percentiles(lambda: ranker.rerank(window.query, batch[0]), runs, fresh),
            "contributions_ms_50": percentiles(lambda: model.contributions(x[:PAGE]), runs),
        }


def prepare(
    settings: Settings,
    user_key: str,
    following: list[str],
    runs: int = 300,
    groups: int = 300,
    size: int = 100,
) -> tuple[RankerModel, dict[str, Any]]:
    """Train the model, compile it into the API processes' folder, and measure it on `user_key`'s
    window; the compiled model and the figures (training and compile seconds too)."""
    start = time.perf_counter()
    model = train_model(settings, groups, size)
    trained = time.perf_counter()
    compiled = model.with_compiled(settings.data_dir / "ranker")
    done = time.perf_counter()
    window = asyncio.run(build_window(settings, user_key, following))
    figures = measure(settings, compiled, window, runs)
    figures["train_s"], figures["compile_s"] = trained - start, done - trained
    figures["version"] = model.version
    return compiled, figures
