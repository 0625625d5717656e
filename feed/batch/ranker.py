"""Training the learned ranker on the engine's own log, and deploying it only when it ranks better.

Examples come from replaying the home feed at earlier times (`snapshot.py`): at a cutoff
`t`, users who engaged after `t` are asked for their feed as the engine would have built it
then (the same sources, hydrators, filters and hand-set scorers, on the state at `t`), and
the learned ranker's features are recorded for the window it would have ranked. Each
candidate's label is what the user did with that post after `t`, in a window as long as
the validation's (`label_windows`): the grade of the summed action weight, a negative action
below nothing. This is the backfilled-history kind of training data: positives from the
log, negatives from what the sources returned at the time.

The model is LightGBM's lambdarank (gradient-boosted trees optimising NDCG directly; small,
fast to evaluate on one core, and its `pred_contrib` explains each score). Validation is a
later cutoff whose labels the training never saw: the last part of the log. The new model
is deployed only when its NDCG@10 there beats the ranker serving now (the hand-set formula,
or the deployed model), and every training writes a report (sizes, validation NDCG of each,
feature importance), logged and kept in AsyncRedis for the operator page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import lightgbm as lgb
import msgspec
import numpy as np
import structlog

from feed.batch.impressions import served_groups
from feed.batch.labels import LABEL_GAIN, NOTHING, grade, signed_weight
from feed.batch.snapshot import Snapshot, SnapshotEngagements, SnapshotIndex, build_snapshot
from feed.config import Settings
from feed.pipeline.candidates import Candidates
from feed.pipeline.components import BaseComponent, FeedQuery, Source
from feed.pipeline.features import FEATURES, action_weight_vector, feature_matrix
from feed.pipeline.home_feed import build_home_feed
from feed.pipeline.rerankers import NearDuplicateReranker, mmr_novelty
from feed.pipeline.retrieval_cache import RetrievalCache
from feed.pipeline.runner import Pipeline
from feed.pipeline.sources import CollaborativeSource, PhoenixSource, SocialEngagementSource
from feed.ranking.model import RankerModel, RankerSlot
from feed.social_graph import SocialGraph, SocialGraphClient
from feed.stores.catalog.model import PostCatalog
from feed.stores.connection import AsyncRedis
from feed.stores.feature_store import FeatureStore
from feed.stores.index.vectors import space_dims
from feed.stores.interaction_log import read_interactions
from feed.stores.messages import LoggedInteraction
from feed.stores.ranker_store import RankerStore
from feed.stores.records import PostRecord
from feed.stores.served_log import ServedLog
from feed.stores.sessions import FeedSessions
from feed.stores.social_graphs import SocialGraphCache

log = structlog.get_logger(__name__)

EVAL_AT = 10
# features a snapshot cannot reproduce (the log keeps no impressions): a model trained on
# replayed history leaves them out, or it would learn "never shown" from every example
NOT_REPLAYED = frozenset({"log_impressions"})
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f not in NOT_REPLAYED)
MODEL_COLUMNS = [FEATURES.index(f) for f in MODEL_FEATURES]
NEAR_DUPLICATE_STEPS = 4  # near-duplicate strengths tried: 0, 1/3, 2/3 and all of the setting's


@dataclass
class Groups:
    """Query groups: feature rows and labels, and each row's post as a row of the snapshot's
    catalogue (-1 where unknown: served pages), which the near-duplicate choice compares."""

    x: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    posts: list[np.ndarray] = field(default_factory=list)

    def add(self, x: np.ndarray, labels: np.ndarray, posts: np.ndarray | None = None) -> None:
        self.x.append(x)
        self.labels.append(labels)
        self.posts.append(np.full(len(labels), -1, dtype=np.int64) if posts is None else posts)

    @property
    def rows(self) -> int:
        return sum(len(g) for g in self.labels)

    def stacked(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        return np.vstack(self.x), np.concatenate(self.labels), [len(g) for g in self.labels]


class TrainingReport(msgspec.Struct):
    """What one training did; kept in AsyncRedis and shown on the operator page."""

    version: int
    started_at: float
    seconds: float
    deployed: bool
    reason: str
    events: int
    posts: int
    cutoffs: list[float]
    train_groups: int
    train_rows: int
    validation_groups: int
    validation_rows: int
    served_train_groups: int  # of those, groups from logged served pages (the rest: replayed history)
    served_validation_groups: int
    ndcg_at_10: dict[str, float]  # on the validation groups: formula, current (if any), new
    importance: dict[str, float]  # share of the total split gain per feature, largest first
    trees: int = 0
    # how far each training cutoff's labels ran: `validation_length` (label_windows), or
    # `to_validation_cutoff` when those windows held too few groups
    label_windows: str = "validation_length"
    # validation NDCG@10 of the new model followed by near-duplicate suppression at each strength
    # tried, and the strength chosen (deployed with the model)
    near_duplicates: dict[str, float] = {}
    near_duplicate_strength: float | None = None


def ndcg(scores: np.ndarray, labels: np.ndarray, k: int = EVAL_AT) -> float:
    """NDCG@k of one group with the label gains above (a negative in the top k costs)."""
    gains = np.asarray(LABEL_GAIN)[labels]
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((gains[order] * discounts[: len(order)]).sum())
    ideal_gains = np.sort(gains)[::-1][:k]
    ideal = float((ideal_gains * discounts[: len(ideal_gains)]).sum())
    return dcg / ideal if ideal > 0 else 0.0


class _Recorder(BaseComponent):
    """Stands where the learned ranker stands in the home feed and keeps the window's features."""

    name = "learned_ranker"

    def __init__(self, catalog: PostCatalog, action_weights: np.ndarray) -> None:
        self.catalog = catalog
        self.action_weights = action_weights
        self.x: np.ndarray | None = None
        self.rows: np.ndarray | None = None

    def rerank(self, query: FeedQuery, candidates: Candidates) -> Candidates:
        self.x = feature_matrix(self.catalog, query, candidates, self.action_weights)
        self.rows = candidates.rows.copy()
        return candidates


def _replay_feed(
    settings: Settings,
    snapshot: Snapshot,
    features: FeatureStore,
    graph: SocialGraphClient,
    sessions: FeedSessions,
    recorder: _Recorder,
) -> Pipeline:
    """The home feed over the snapshot: index and social reads answered from it, no caches, no
    side effects, and the recorder in the learned ranker's place."""
    uncached = settings.model_copy(
        update={"ranking": settings.ranking.model_copy(update={"retrieval_cache_ttl_s": 0.0})}
    )
    r = uncached.ranking
    index = SnapshotIndex(snapshot.catalog)
    home = build_home_feed(uncached, snapshot.catalog, features, index, graph, sessions, RankerSlot())
    replaced: dict[str, Source] = {
        PhoenixSource.name: PhoenixSource(index, r.phoenix_budget, _no_cache(snapshot)),
        CollaborativeSource.name: CollaborativeSource(index, r.collaborative_budget, _no_cache(snapshot)),
        SocialEngagementSource.name: SocialEngagementSource(
            snapshot.catalog,
            SnapshotEngagements(snapshot),
            r.social_budget,
            r.social_per_user,
            r.social_max_followees,
            _no_cache(snapshot),
        ),
    }
    return dataclasses.replace(
        home,
        hydrators=[],
        sources=[replaced.get(s.name, s) for s in home.sources],
        rerankers=[recorder],
        side_effects=[],
    )


def _no_cache(snapshot: Snapshot) -> RetrievalCache:
    return RetrievalCache(snapshot.catalog, 0.0, 0)


async def _groups(
    settings: Settings,
    snapshot: Snapshot,
    labels: dict[str, dict[str, list[float]]],
    graphs: dict[str, SocialGraph],
    features: FeatureStore,
    graph_client: SocialGraphClient,
    sessions: FeedSessions,
    negatives: int | None,
    rng: random.Random,
) -> tuple[Groups, list[np.ndarray]]:
    """One group per user with a positive label among the candidates of their feed at the
    snapshot; `negatives` caps the unlabelled rows kept per group (None: all, for validation).
    Also returns each group's pre-rank (formula) scores, in row order."""
    recorder = _Recorder(snapshot.catalog, action_weight_vector(settings.ranking.action_weights))
    pipeline = _replay_feed(settings, snapshot, features, graph_client, sessions, recorder)
    window = settings.ranking.rerank_window
    out, prerank = Groups(), list[np.ndarray]()
    prerank_column = FEATURES.index("prerank")
    catalog = snapshot.catalog
    for user, actions in sorted(labels.items()):
        query = FeedQuery(
            user_id=user,
            user_key=user,
            limit=1,
            cursor="",
            now=snapshot.at,
            user=snapshot.users[user],
            graph=graphs.get(user, SocialGraph()),
        )
        recorder.x = recorder.rows = None
        await pipeline.run(query)
        if recorder.x is None or recorder.rows is None or not len(recorder.rows):
            continue
        keys = [catalog.keys[r] for r in recorder.rows.tolist()]
        y = np.array([grade(actions[k]) if k in actions else NOTHING for k in keys], dtype=np.int64)
        if not (y > NOTHING).any():
            continue
        keep = np.arange(min(len(y), window))
        if negatives is not None:
            labelled = np.flatnonzero(y != NOTHING)
            others = np.flatnonzero(y == NOTHING).tolist()
            sampled = rng.sample(others, min(negatives, len(others)))
            keep = np.sort(np.r_[labelled, np.asarray(sampled, dtype=np.int64)])
        out.add(recorder.x[np.ix_(keep, MODEL_COLUMNS)], y[keep], recorder.rows[keep])
        prerank.append(recorder.x[keep, prerank_column].astype(np.float64))
    return out, prerank


def _labels(
    settings: Settings, events: list[LoggedInteraction], start: float, end: float
) -> dict[str, dict[str, list[float]]]:
    """user -> post -> action weights of the interactions in [start, end)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        if start <= e.ts < end:
            out[e.user][e.post].append(signed_weight(e.action, settings.ranking))
    return out


def label_windows(train_cuts: list[float], validation_cut: float, end: float) -> list[tuple[float, float]]:
    """The [start, stop) of each training cutoff's labels: as long as the validation's (from its
    cutoff to the log's end), and never past the validation cutoff. A model is chosen for what
    users go on to do in that much time, so it is trained on the same question; labels running
    from an early cutoff to the validation cutoff (years, in a long log) would reward what stays
    popular for years over what users engage with next."""
    horizon = end - validation_cut
    return [(cut, min(cut + horizon, validation_cut)) for cut in train_cuts]


def _sample(labels: dict[str, dict[str, list[float]]], n: int, rng: random.Random) -> dict[str, Any]:
    """At most `n` users, only those with a positive action in the window."""
    users = sorted(u for u, posts in labels.items() if any(grade(w) > NOTHING for w in posts.values()))
    chosen = users if len(users) <= n else sorted(rng.sample(users, n))
    return {u: labels[u] for u in chosen}


def fit_params(settings: Settings, seed: int) -> dict[str, Any]:
    """LightGBM's training parameters for the ranker (also what `bench.serving` trains its model with)."""
    r = settings.ranking
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [EVAL_AT],
        "label_gain": LABEL_GAIN,
        "lambdarank_truncation_level": 2 * EVAL_AT,
        "num_leaves": r.ranker_leaves,
        "learning_rate": 0.05,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "num_threads": 1,
        "seed": seed,
        "deterministic": True,
        "verbose": -1,
    }


def _fit(train: Groups, settings: Settings, seed: int) -> lgb.Booster:
    """Lambdarank on the training groups; a random fifth of them (not the newest: those are the
    most like serving) stops the boosting early, keeping the best number of trees."""
    order = np.random.default_rng(seed).permutation(len(train.labels))
    cut = max(1, int(len(order) * 0.8))
    fit_groups = Groups([train.x[i] for i in order[:cut]], [train.labels[i] for i in order[:cut]])
    x, y, sizes = fit_groups.stacked()
    params = fit_params(settings, seed)
    fit_set = lgb.Dataset(x, y, group=sizes, feature_name=list(MODEL_FEATURES))
    callbacks: list[Any] = []
    valid_sets: list[lgb.Dataset] = []
    if len(order) > cut:
        stop = Groups([train.x[i] for i in order[cut:]], [train.labels[i] for i in order[cut:]]).stacked()
        valid_sets = [lgb.Dataset(stop[0], stop[1], group=stop[2], reference=fit_set)]
        # NDCG on a few hundred held-out groups moves by chance from one tree to the next: a
        # short patience stopped the boosting at 12 to 49 trees on the same data in different
        # runs, so a third of the trees may pass without a gain before it stops
        callbacks = [lgb.early_stopping(max(20, settings.ranking.ranker_max_trees // 3), verbose=False)]
    return lgb.train(
        params,
        fit_set,
        num_boost_round=settings.ranking.ranker_max_trees,
        valid_sets=valid_sets,
        callbacks=callbacks,
    )


def near_duplicate_ndcg(
    settings: Settings, catalog: PostCatalog, model: RankerModel, validation: Groups
) -> dict[float, float]:
    """Validation NDCG@10 of `model`'s ranking followed by near-duplicate suppression, at each of
    NEAR_DUPLICATE_STEPS strengths from none to the setting's (rows are of `catalog`)."""
    r = settings.ranking
    reranker = NearDuplicateReranker(
        catalog, r.near_duplicate_threshold, r.near_duplicate_strength, r.near_duplicate_window, RankerSlot()
    )
    strengths = [
        round(float(s), 4) for s in np.linspace(0.0, r.near_duplicate_strength, NEAR_DUPLICATE_STEPS)
    ]
    totals = dict.fromkeys(strengths, 0.0)
    for x, y, posts in zip(validation.x, validation.labels, validation.posts, strict=True):
        score = model.score(x)  # as the learned ranker scores
        head = np.argsort(-score, kind="stable")[: r.near_duplicate_window]
        similarity = reranker.max_cosines(posts[head])
        for strength in strengths:
            adjusted = score.copy()
            adjusted[head] *= mmr_novelty(similarity, score[head], r.near_duplicate_threshold, strength)
            totals[strength] += ndcg(adjusted, y)
    return {s: round(total / max(len(validation.labels), 1), 4) for s, total in totals.items()}


def chosen_strength(scores: dict[float, float]) -> float:
    """The strength whose validation NDCG is best; a tie keeps the stronger suppression (a feed
    without reposts twice is the default: weaker only where the data says so)."""
    return max(scores, key=lambda s: (scores[s], s))


def deployable(ndcg_at_10: dict[str, float]) -> tuple[bool, str]:
    """Whether the new model beats the ranker serving now (the deployed model, else the formula)
    on the validation groups, and why; a tie keeps the serving one."""
    name = "current" if "current" in ndcg_at_10 else "formula"
    new, serving = ndcg_at_10["new"], ndcg_at_10[name]
    if new > serving:
        return True, f"new {new:.4f} > {name} {serving:.4f}"
    return False, f"new {new:.4f} <= {name} {serving:.4f}: the {name} ranker stays"


def _mean_ndcg(scores: list[np.ndarray], groups: Groups) -> float:
    return float(np.mean([ndcg(s, y) for s, y in zip(scores, groups.labels, strict=True)]))


def _importance(booster: lgb.Booster) -> dict[str, float]:
    gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    total = float(gain.sum()) or 1.0
    named = sorted(zip(booster.feature_name(), gain / total, strict=True), key=lambda item: -item[1])
    return {name: round(float(share), 4) for name, share in named if share > 0}


async def _graphs(graph_client: SocialGraphClient, users: set[str]) -> dict[str, SocialGraph]:
    """Today's graph of each user, from the host (the host keeps no history of it)."""
    ordered = sorted(users)
    found: list[SocialGraph] = []
    for i in range(0, len(ordered), 64):
        found += await asyncio.gather(*(graph_client.get(u) for u in ordered[i : i + 64]))
    return dict(zip(ordered, found, strict=True))


async def train_ranker(redis: AsyncRedis, settings: Settings, seed: int = 0) -> TrainingReport | None:
    """Train on the log, validate on its last part, deploy when better; None when the log is
    too short to hold out anything."""
    started, started_wall = time.perf_counter(), time.time()
    r = settings.ranking
    events = sorted(await read_interactions(redis), key=lambda e: e.ts)
    if len(events) < r.ranker_min_events:
        return None
    features = FeatureStore(redis, settings.seen_max)
    posts: list[PostRecord] = [p async for batch in features.all_posts() for p in batch]
    times = np.array([e.ts for e in events])
    train_cuts = [float(np.quantile(times, q)) for q in r.ranker_train_cutoffs]
    validation_cut = float(np.quantile(times, r.ranker_validation_cutoff))
    end = float(times[-1]) + 1.0
    rng = random.Random(seed)
    dims = space_dims(settings)
    sessions = FeedSessions(redis, settings.served_ttl_s, settings.session_ranking_ttl_s)
    store = RankerStore(redis)

    async with httpx.AsyncClient() as http:
        graph_client = SocialGraphClient(
            SocialGraphCache(redis),
            http,
            settings.backend_url,
            settings.social_graph_timeout_s * 10,
            settings.social_graph_ttl_s,
        )

        def plan(windows: list[tuple[float, float]]) -> list[tuple[float, dict[str, Any]]]:
            return [
                (start, _sample(_labels(settings, events, start, stop), r.ranker_max_groups, rng))
                for start, stop in windows
            ]

        async def replayed(plans: list[tuple[float, dict[str, Any]]]) -> Groups:
            out = Groups()
            for cut, labels in plans:
                snapshot = build_snapshot(settings, dims, posts, events, cut, labels, seed)
                groups, _ = await _groups(
                    settings,
                    snapshot,
                    labels,
                    graphs,
                    features,
                    graph_client,
                    sessions,
                    r.ranker_negatives,
                    rng,
                )
                out.x += groups.x
                out.labels += groups.labels
                out.posts += groups.posts
            return out

        plans = plan(label_windows(train_cuts, validation_cut, end))
        validation_labels = _sample(_labels(settings, events, validation_cut, end), r.ranker_max_groups, rng)
        graphs = await _graphs(
            graph_client, {u for _, labels in plans for u in labels} | set(validation_labels)
        )
        train, windows = await replayed(plans), "validation_length"
        if len(train.labels) < r.ranker_min_groups:
            # a log too short to fill enough groups in validation-length windows (a small
            # deployment's first days): each cutoff is labelled up to the validation cutoff
            plans = plan([(cut, validation_cut) for cut in train_cuts])
            graphs |= await _graphs(graph_client, {u for _, labels in plans for u in labels} - set(graphs))
            train, windows = await replayed(plans), "to_validation_cutoff"
        snapshot = build_snapshot(settings, dims, posts, events, validation_cut, validation_labels, seed)
        validation_catalog = snapshot.catalog
        validation, prerank = await _groups(
            settings, snapshot, validation_labels, graphs, features, graph_client, sessions, None, rng
        )
    # served pages, with the features they were served with: before the validation cutoff they
    # train, after it they validate (labels never cross the cutoff)
    pages = await ServedLog(redis, settings.served_log_max).read(0.0, end)
    served = {"train": 0, "validation": 0}
    for name, chosen, label_end, into in (
        ("train", [p for p in pages if p.at < validation_cut], validation_cut, train),
        ("validation", [p for p in pages if p.at >= validation_cut], end, validation),
    ):
        found = served_groups(
            chosen, events, ranking=r, label_window_s=settings.served_label_window_s, end=label_end
        )
        served[name] = len(found)
        for x, y in found:
            into.add(x[:, MODEL_COLUMNS], y)
            if into is validation:
                prerank.append(x[:, FEATURES.index("prerank")].astype(np.float64))

    version = time.time_ns() // 1000
    report = TrainingReport(
        version=version,
        started_at=started_wall,
        seconds=0.0,
        deployed=False,
        reason="",
        events=len(events),
        posts=len(posts),
        cutoffs=[*train_cuts, validation_cut],
        train_groups=len(train.labels),
        train_rows=train.rows,
        validation_groups=len(validation.labels),
        validation_rows=validation.rows,
        served_train_groups=served["train"],
        served_validation_groups=served["validation"],
        ndcg_at_10={},
        importance={},
        label_windows=windows,
    )
    if len(train.labels) < r.ranker_min_groups or not validation.labels:
        report.reason = f"too few groups: {len(train.labels)} to train, {len(validation.labels)} to validate"
    else:
        booster = await asyncio.to_thread(_fit, train, settings, seed)
        model = RankerModel(version, MODEL_FEATURES, started_wall, booster)
        scores = {
            "formula": _mean_ndcg(prerank, validation),
            # a yardstick, never deployed: the most liked first (what a popularity list shows)
            "popularity": _mean_ndcg(
                [x[:, MODEL_FEATURES.index("log_positive")].astype(np.float64) for x in validation.x],
                validation,
            ),
        }
        current_raw = await store.model()
        current = RankerModel.from_bytes(current_raw) if current_raw else None
        if current is not None and set(current.features) <= set(MODEL_FEATURES):
            columns = [MODEL_FEATURES.index(f) for f in current.features]
            scores["current"] = _mean_ndcg([current.predict(x[:, columns]) for x in validation.x], validation)
        scores["new"] = _mean_ndcg([model.predict(x) for x in validation.x], validation)
        report.ndcg_at_10 = {k: round(v, 4) for k, v in scores.items()}
        report.importance = _importance(booster)
        report.trees = booster.num_trees()
        report.deployed, report.reason = deployable(scores)
        near = await asyncio.to_thread(near_duplicate_ndcg, settings, validation_catalog, model, validation)
        report.near_duplicates = {str(k): v for k, v in near.items()}
        report.near_duplicate_strength = chosen_strength(near)
        model = dataclasses.replace(model, near_duplicate_strength=report.near_duplicate_strength)
        if report.deployed:
            await store.deploy(version, model.to_bytes())
    report.seconds = round(time.perf_counter() - started, 1)
    await store.add_report(msgspec.json.encode(report))
    log.info(
        "ranker_trained",
        deployed=report.deployed,
        reason=report.reason,
        train_groups=report.train_groups,
        validation_groups=report.validation_groups,
        ndcg_at_10=report.ndcg_at_10,
        top_features=dict(list(report.importance.items())[:8]),
        near_duplicate_strength=report.near_duplicate_strength,
        seconds=report.seconds,
    )
    return report
