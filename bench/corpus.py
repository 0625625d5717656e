"""A synthetic corpus for the serving benchmark, written through the engine's own stores.

Posts get unit 384-d text vectors drawn around topic centres (no model calls: like the
embeddings of real text, they cluster; uniformly random vectors have no neighbourhoods, so
no approximate index finds their neighbours) and are committed with
`commit_ingested` (Redis records, states, index operations) and upserted into the vector
index (`EdgeVectorIndex` or `ServerVectorIndex`); authors' post counts follow a power
law. Users get an interaction history applied by the real `EventApplier`: interest
vectors, seen sets, affinity, engagement counters and trending. The follow graph (users
follow mostly the big authors) is written as JSON for `bench.host` to serve.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis
from redis.asyncio import Redis as AsyncRedis

from feed.config import Settings
from feed.events.apply import EventApplier
from feed.events.schemas import InteractionEvent
from feed.stores import keys
from feed.stores.index.vectors import VectorIndex
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.post_store import commit_ingested
from feed.stores.records import PostRecord

POSTS_PER_TOPIC = 100
TOPIC_SPREAD = 0.8  # a post's cosine to its topic's centre: about 0.78; to another post of it, 0.6
ACTIONS = ("view", "view", "view", "click", "like", "like", "dwell", "share", "comment", "hide")


@dataclass(frozen=True)
class CorpusSpec:
    """How big the corpus is; `seed` makes it reproducible."""

    posts: int = 100_000
    authors: int = 5_000
    users: int = 2_000
    events_per_user: int = 20
    follows_per_user: int = 200
    dim: int = 384
    seed: int = 0


@dataclass(frozen=True)
class Corpus:
    """What was written, for the load generator and the numpy floor."""

    post_keys: list[str]
    vectors: np.ndarray  # float32, one row per post (same order as post_keys)
    users: list[str]
    graph: dict[str, dict[str, list[str]]]
    seconds: dict[str, float]


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random unit float32 vectors."""
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def near(rng: np.random.Generator, centres: np.ndarray, spread: float = TOPIC_SPREAD) -> np.ndarray:
    """One unit vector around each of `centres` (unit rows): the centre plus a random unit
    vector times `spread`, normalised (cosine to its centre about 1 / sqrt(1 + spread²))."""
    v = centres + spread * unit_rows(rng, len(centres), centres.shape[1])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def topic_rows(rng: np.random.Generator, n: int, dim: int, per_topic: int = POSTS_PER_TOPIC) -> np.ndarray:
    """n unit float32 vectors, each near one of n / `per_topic` random topic centres."""
    centres = unit_rows(rng, max(1, n // per_topic), dim)
    return near(rng, centres[rng.integers(0, len(centres), n)])


def power_law_authors(rng: np.random.Generator, posts: int, authors: int) -> np.ndarray:
    """Author index of each post; author k has a share proportional to 1 / (k + 1)."""
    weights = 1.0 / np.arange(1, authors + 1)
    return rng.choice(authors, size=posts, p=weights / weights.sum())


def build(settings: Settings, index: VectorIndex, spec: CorpusSpec, threads: int = 4) -> Corpus:
    """Write the corpus to settings.redis_url and `index` (both empty)."""
    rng = np.random.default_rng(spec.seed)
    seconds: dict[str, float] = {}
    vectors = topic_rows(rng, spec.posts, spec.dim)
    author_of = power_law_authors(rng, spec.posts, spec.authors)
    now = time.time()
    ages = rng.uniform(0, 27 * 24 * 3600, spec.posts)  # posts of the last four weeks
    records = [
        PostRecord(
            key=f"p{i}",
            post_id=f"p{i}",
            author_id=f"a{author_of[i]}",
            author_key=f"a{author_of[i]}",
            created_at=now - float(ages[i]),
            post_type="text",
            text=f"post {i}",
            vectors={"text": vectors[i]},
        )
        for i in range(spec.posts)
    ]

    start = time.perf_counter()
    clients = [redis.Redis.from_url(settings.redis_url) for _ in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: commit_ingested(clients[i % threads], records[i]), range(spec.posts)))
    clients[0].delete(keys.INDEX_STREAM)  # the index is written directly below, not replayed by the API
    for c in clients:
        c.close()
    seconds["posts_to_redis"] = time.perf_counter() - start

    start = time.perf_counter()
    asyncio.run(_upsert(index, records))
    seconds["posts_to_index"] = time.perf_counter() - start

    users = [f"u{i}" for i in range(spec.users)]
    start = time.perf_counter()
    asyncio.run(_history(settings, rng, spec, users))
    seconds["history"] = time.perf_counter() - start

    big = np.argsort(np.bincount(author_of, minlength=spec.authors))[::-1]
    graph = {}
    for u in users:
        k = min(spec.follows_per_user, spec.authors)
        # most follows go to the big authors, some to a random tail
        biggest = big[: min(k * 2, spec.authors)]
        head = biggest[rng.choice(len(biggest), size=k // 2, replace=False)]
        tail = rng.choice(spec.authors, size=k - k // 2, replace=False)
        graph[u] = {"following": sorted({f"a{a}" for a in (*head, *tail)}), "blocked": []}
    return Corpus([r.key for r in records], vectors, users, graph, seconds)


async def _upsert(index: VectorIndex, records: list[PostRecord], batch: int = 2_000) -> None:
    await index.prepare()
    for i in range(0, len(records), batch):
        await index.upsert(records[i : i + batch])
    await index.close()


async def _history(settings: Settings, rng: np.random.Generator, spec: CorpusSpec, users: list[str]) -> None:
    r = AsyncRedis.from_url(settings.redis_url)
    applier = EventApplier(InteractionWrites(r, settings), settings)
    events: list[InteractionEvent] = []
    now = time.time()
    for u in users:
        for j, post in enumerate(rng.choice(spec.posts, size=spec.events_per_user, replace=False)):
            action = ACTIONS[int(rng.integers(len(ACTIONS)))]
            events.append(InteractionEvent(f"{u}-{j}", u, u, f"p{post}", f"p{post}", action, now - 3600 + j))
    for i in range(0, len(events), 500):
        await applier.apply(events[i : i + 500])
    await r.aclose()


def write_graph(corpus: Corpus, path: Path) -> None:
    """The follow graph as JSON (user id -> {following, blocked}) for `bench.host`."""
    path.write_text(json.dumps(corpus.graph))
