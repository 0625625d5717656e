"""Serving benchmark: `POST /feed`, `POST /interaction` and the event consumer on a synthetic
corpus, against the bare numpy floor, in one run.

    python -m bench.serving [--posts 100000] [--candidates 10000] [--limit 50]
                            [--concurrency 16] [--duration 15] [--rate 100]
                            [--first-share 0.25] [--qdrant-url URL] [--ranker {none,learned}]

It starts its own Redis-compatible server, writes the corpus through the engine's stores
(`bench.corpus`: random unit 384-d vectors, power-law authors, users with a history),
serves the follow graph from a stand-in host (`bench.host`), starts `feed-api` (and later
`feed-consumer`) as processes, and drives them with a closed-loop client on loopback
(`bench.load`). Source budgets are set so that a feed sees about `--candidates`
candidates.

Feeds are measured two ways. Closed loop (`--concurrency` clients, each sending its next
request when the last is answered): every user's first feed (retrieval not cached yet),
then feeds of users seen before; this gives the most requests per second. Open loop
(`--rate` requests per second whatever the answers, each timed from its scheduled send):
the latency users see at that load. Its mix: `--first-share` of the requests are first
feeds, for users kept out of the closed loop; the rest are returning users. Before the API
starts, the vector index answers 100 nearest-neighbour queries, whose top 100 are compared
with an exact numpy scan (`ann_recall_at_100`).

The floor is the time of numpy scoring the same number of candidate vectors (one
matrix-vector product and a top-`limit` selection) in this process. The consumer is
measured on the backlog `/interaction` left: it starts after that phase and the clock
runs from its first applied event to its last. Prints one table and writes the report to
bench/results/serving-<posts>.json (`serving-100k.json`, `serving-1m.json`), overwritten.

The learned ranker (`bench.ranker`): a model of the shipped size (the trainer's parameters,
`ranker_max_trees` trees of `ranker_leaves` leaves, on synthetic rows) is trained, compiled
into the API processes' folder and measured in this process on one core (predict for 1,000
rows through LightGBM and compiled, the whole learned-ranker stage on a 1,000-candidate window
of the corpus, contributions for a page), before the API starts. With `--ranker learned` (the
default) it is deployed before the API starts, so each API process loads it, and its compiled
form from the object file, before it answers; one `explain` feed then checks that it ranks.
With `--ranker none` the formula ranks the feeds (the figures are measured all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis as AsyncRedis
from threadpoolctl import threadpool_limits

from bench import ranker as learned
from bench.corpus import Corpus, CorpusSpec, build, near, write_graph
from bench.load import LoadResult, OpenLoopResult, closed_loop, open_loop
from feed.config import Settings
from feed.redis_server import free_port, start_server
from feed.stores import keys
from feed.stores.catalog.model import PostCatalog
from feed.stores.catalog.sync import CatalogSync
from feed.stores.index.builds import live_folder
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.factory import open_vector_index
from feed.stores.index.server import ServerVectorIndex
from feed.stores.index.vectors import VectorIndex, space_dims

RESULTS = Path(__file__).parent / "results"


def budgets(candidates: int, phoenix_share: float) -> dict[str, int]:
    """Source budgets that add up to `candidates`: nearest neighbours take `phoenix_share`,
    in-network half of the rest, trending and fresh a quarter each."""
    rest = 1.0 - phoenix_share
    return {
        "thunder_budget": int(candidates * rest / 2),
        "thunder_per_author": 40,
        "phoenix_budget": int(candidates * phoenix_share),
        "trending_budget": int(candidates * rest / 4),
        "fresh_budget": int(candidates * rest / 4),
    }


def numpy_floor(vectors: np.ndarray, n: int, limit: int, repeats: int = 200) -> dict[str, float]:
    """Median ms of scoring `n` candidate vectors against a user vector and taking the top
    `limit`, on one BLAS thread: with the candidates' vectors already side by side
    (`contiguous`), and gathered from the matrix of every post first (`gathered`, what any
    engine whose candidates come from several sources must do)."""
    rng = np.random.default_rng(1)
    rows = rng.choice(len(vectors), size=n, replace=False)
    matrix = np.ascontiguousarray(vectors[rows])
    user = vectors[0]

    def timed(score: Callable[[], np.ndarray]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            scores = score()
            top = np.argpartition(-scores, limit)[:limit]
            top[np.argsort(-scores[top])]
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times))

    with threadpool_limits(1, "blas"):
        return {
            "contiguous": timed(lambda: matrix @ user),
            "gathered": timed(lambda: np.take(vectors, rows, axis=0) @ user),  # numpy's fastest gather here
        }


def ann_recall(index: VectorIndex, corpus: Corpus, queries: int = 100, k: int = 100) -> float:
    """Mean recall@k of `index`'s nearest neighbours against an exact scan of the corpus, over
    `queries` vectors near random posts (as a user's interests are near what they liked); the
    index is closed after (an embedded shard is opened by one process at a time: before the
    API starts)."""
    rng = np.random.default_rng(7)
    probes = near(rng, corpus.vectors[rng.integers(0, len(corpus.vectors), queries)])
    exact = np.argpartition(-(probes @ corpus.vectors.T), k, axis=1)[:, :k]

    async def search() -> list[set[str]]:
        await index.prepare()
        try:
            return [{h.post_key for h in await index.nearest([("text", q)], k, [])} for q in probes]
        finally:
            await index.close()

    found = asyncio.run(search())
    keys_of = np.asarray(corpus.post_keys)
    return float(np.mean([len(f & set(keys_of[e])) / k for f, e in zip(found, exact, strict=True)]))


def size_label(posts: int) -> str:
    """`100k`, `1m`: the name the report of a corpus of that size is kept under."""
    if posts % 1_000_000 == 0:
        return f"{posts // 1_000_000}m"
    return f"{posts // 1000}k" if posts % 1000 == 0 else str(posts)


def py_spy(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    """Start sampling a process and its children with py-spy for `seconds` (raw collapsed
    stacks into `out`)."""
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [
            str(bin_dir / "py-spy"),
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "--subprocesses",
            "-o",
            str(out),
            "-d",
            str(seconds),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
    )


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's supervisor and its API workers), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def memory_mb(pid: int) -> dict[str, float]:
    """Memory of a process and its descendants from /proc, MB: resident (`rss`, pages shared
    by several processes counted once per process) and proportional (`total`, `anon`,
    `file`: a shared page counted once over all of them, split between its sharers; file
    pages are the page cache of mapped files, such as the catalogue snapshot's vectors)."""
    fields = {"Rss": "rss", "Pss": "total", "Pss_Anon": "anon", "Pss_File": "file"}
    out = {name: 0.0 for name in fields.values()}
    for proc in process_tree(pid):
        for line in Path(f"/proc/{proc}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, value = line.partition(":")
            if key in fields:
                out[fields[key]] += int(value.split()[0]) / 1024
    return out


async def write_catalog_snapshot(settings: Settings) -> None:
    """The catalogue's snapshot, as a deployment that ran before finds it: the API processes
    start from it and share its vectors, rather than each reading every post from Redis."""
    client = AsyncRedis.from_url(settings.redis_url)
    try:
        catalog = PostCatalog(space_dims(settings), horizons_s=settings.ranking.trending_horizons_s)
        snapshots = settings.catalog_snapshots()
        sync = CatalogSync(
            client, catalog, snapshots=snapshots, writes_snapshots=True, host=socket.gethostname()
        )
        await sync.load()
        await sync.save_snapshot()
    finally:
        await client.aclose()


def wait_http(url: str, timeout_s: float = 300.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=1.0).raise_for_status()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


def wait_replicas(url: str, workers: int, timeout_s: float = 600.0) -> None:
    """Wait until each of the API's `workers` processes has answered `/health` (a new
    connection per call, so the kernel hands them to the workers in turn)."""
    deadline = time.monotonic() + timeout_s
    seen: set[int] = set()
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only API replicas {sorted(seen)} of {workers} answered")
        seen.add(wait_http(f"{url}/health", timeout_s).json()["replica"])
        time.sleep(0.05)


def run_consumer(
    env: dict[str, str],
    redis_url: str,
    expected: int,
    profile: Path | None = None,
    processes: int = 1,
    timeout_s: float = 600.0,
) -> dict[str, float]:
    """Start `processes` `feed-consumer`s on the backlog; events/s from the first applied event
    to the last (the first consumer sampled by py-spy into `profile` if given, from the first
    applied event on, so the profile shows applying events rather than the process starting)."""
    r = redis.Redis.from_url(redis_url)
    before = int(r.get(keys.APPLIED_EVENTS) or 0)
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "feed-consumer")], env=env) for _ in range(processes)]
    proc = procs[0]
    spy = None
    try:
        first = last = 0.0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            applied = int(r.get(keys.APPLIED_EVENTS) or 0) - before
            now = time.perf_counter()
            if applied and not first:
                first = now
                spy = py_spy(proc.pid, profile, 5) if profile else None
            if applied >= expected:
                last = now
                break
            time.sleep(0.01)
        seconds = (last or time.perf_counter()) - (first or time.perf_counter())
        return {"events": float(expected), "seconds": seconds, "events_per_s": expected / max(seconds, 1e-9)}
    finally:
        if spy is not None:
            spy.wait(60)
        for each in procs:
            each.terminate()
        for each in procs:
            each.wait(30)
        r.close()


def feed_phase(
    url: str, users: list[str], limit: int, concurrency: int, duration: float
) -> tuple[LoadResult, list[float]]:
    took: list[float] = []
    pick = random.Random(2)
    result = asyncio.run(
        closed_loop(
            "feed",
            f"{url}/feed",
            lambda i: {"user_id": pick.choice(users), "limit": limit},
            concurrency,
            duration,
            200,
            on_answer=lambda body: took.append(float(body["took_ms"])),
        )
    )
    return result, took


def open_loop_phase(
    url: str,
    first: list[str],
    returning: list[str],
    limit: int,
    rate: float,
    first_share: float,
    duration: float,
) -> OpenLoopResult:
    """`rate` feeds per second for `duration` s: a `first_share` of them (evenly spread) for the
    users of `first` in turn, each never served before, the others for random `returning` users."""
    pick = random.Random(4)
    fresh = iter(first)

    def request(i: int) -> tuple[str, dict[str, Any]]:
        # request i is a first feed when it crosses the next multiple of 1 / first_share
        if int((i + 1) * first_share) > int(i * first_share):
            return "first_feed", {"user_id": next(fresh), "limit": limit}
        return "returning", {"user_id": pick.choice(returning), "limit": limit}

    return asyncio.run(open_loop(f"{url}/feed", request, rate, duration, 200))


def first_users_needed(rate: float, first_share: float, duration: float) -> int:
    """Users the open loop's first feeds take (each once)."""
    return int(rate * duration * first_share) + 1


def interaction_phase(url: str, corpus: Corpus, concurrency: int, duration: float) -> LoadResult:
    pick = random.Random(3)
    actions = ("view", "click", "like", "dwell", "share")
    return asyncio.run(
        closed_loop(
            "interaction",
            f"{url}/interaction",
            lambda i: {
                "user_id": pick.choice(corpus.users),
                "post_id": pick.choice(corpus.post_keys),
                "action": pick.choice(actions),
                "dwell_ms": 5000,
            },
            concurrency,
            duration,
            202,
        )
    )


def explain(url: str, user: str, limit: int) -> dict[str, Any]:
    """One feed with `explain`: stage timings and candidate counts."""
    body = httpx.post(
        f"{url}/feed", json={"user_id": user, "limit": limit, "explain": True}, timeout=30
    ).json()
    return {f"{s['stage']}:{s['name']}": (s["ms"], s["count_out"], s["status"]) for s in body["stages"]}


def profile_top(collapsed: Path, n: int = 15) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the functions with the most samples on top of the stack
    (self), and the engine's functions with the most anywhere in it (inclusive), as shares
    of all samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # per function, not per line
        samples = int(count)
        total += samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            if "(feed/" in frame and "site-packages" not in frame:  # the engine's own functions
                inclusive[frame] = inclusive.get(frame, 0) + samples

    def top(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, c / max(total, 1)) for f, c in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]

    return {"self": top(own), "inclusive": top(inclusive)}


WINDOW_STAGES = ("learned_ranker", "feature_logger")  # where a window's features are computed


def stage_totals(url: str, components: tuple[str, ...] = WINDOW_STAGES) -> dict[str, tuple[float, float]]:
    """Seconds and runs of pipeline components in the API so far (`/metrics`), summed over its
    processes' series."""
    text = httpx.get(f"{url}/metrics", timeout=30).raise_for_status().text
    totals: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            component = sample.labels.get("component", "")
            if component in components and sample.name.startswith("feed_pipeline_stage_seconds_"):
                seconds, runs = totals.get(component, (0.0, 0.0))
                if sample.name.endswith("_sum"):
                    totals[component] = (seconds + sample.value, runs)
                elif sample.name.endswith("_count"):
                    totals[component] = (seconds, runs + sample.value)
    return totals


def ranking_cache_lookups(url: str) -> tuple[float, float]:
    """Hits (in the process, or shared) and misses of the API's ranking cache so far (`/metrics`,
    summed over processes)."""
    text = httpx.get(f"{url}/metrics", timeout=30).raise_for_status().text
    counts = {"hit": 0.0, "shared_hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result = sample.labels.get("result", "")
            if sample.name == "feed_cache_lookups_total" and sample.labels.get("cache") == "ranking":
                counts[result] = counts.get(result, 0.0) + sample.value
    return counts["hit"] + counts["shared_hit"], counts["miss"]


def stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Mean ms and runs of each component between two `stage_totals`, for those that ran."""
    out = {}
    for component, (seconds, runs) in after.items():
        seconds_before, runs_before = before.get(component, (0.0, 0.0))
        if runs > runs_before:
            out[component] = {
                "mean_ms": 1000 * (seconds - seconds_before) / (runs - runs_before),
                "runs": runs - runs_before,
            }
    return out


def candidates_seen(url: str, user: str, limit: int) -> tuple[dict[str, int], dict[str, Any]]:
    """Candidates per source and after de-duplication, for one feed (explain); and the ranker that
    ordered it (`kind`, `version`, the learned ranker stage's `status`)."""
    body = httpx.post(
        f"{url}/feed", json={"user_id": user, "limit": limit, "explain": True}, timeout=30
    ).json()
    stages = {s["name"]: s for s in body["stages"]}
    out = {s["name"]: s["count_out"] for s in body["stages"] if s["stage"] == "source"}
    out["after_duplicates"] = stages["duplicates"]["count_out"]
    stage = stages.get("learned_ranker", {})
    return out, {**body["ranker"], "status": stage.get("status", "absent"), "ms": stage.get("ms")}


def ranker_rows(r: dict[str, Any]) -> list[str]:
    """The learned ranker's rows of the table: what ranked the feeds, and its inference cost."""
    served = r["served"]
    kind = f"learned model {served['version']}" if served["kind"] == "learned" else served["kind"]
    p, rerank, contributions = r["predict_ms_1000"], r["rerank_ms_1000"], r["contributions_ms_50"]
    return [
        f"| ranker of the feed phases; in the API, mean ms of the stage that computed the window's "
        f"features in each user's first feed | {kind}; "
        + ", ".join(f"{c} {v['mean_ms']:.2f} ms ({v['runs']:.0f} runs)" for c, v in served["stages"].items())
        + " |",
        f"| learned ranker, {r['trees']} trees of {r['leaves']} leaves, {r['features']} features, one core "
        f"(this process): predict for 1,000 rows, compiled / LightGBM | p50 {p['compiled']['p50']:.2f} ms, "
        f"p99 {p['compiled']['p99']:.2f} ms / p50 {p['lightgbm']['p50']:.2f} ms, "
        f"p99 {p['lightgbm']['p99']:.2f} ms |",
        f"| learned ranker stage on a {r['window']}-candidate window (features, compiled predict, sort) | "
        f"p50 {rerank['p50']:.2f} ms, p99 {rerank['p99']:.2f} ms |",
        f"| contributions (`explain`) for a {learned.PAGE}-row page | p50 {contributions['p50']:.2f} ms |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--authors", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument(
        "--phoenix-share",
        type=float,
        default=0.1,
        help="share of the candidates from nearest-neighbour retrieval (the first measurement used 0.4)",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: feed requests per second")
    parser.add_argument(
        "--first-share", type=float, default=0.25, help="open loop: share of the feeds that are users' first"
    )
    parser.add_argument(
        "--no-caches",
        action="store_true",
        help="rank every feed in full: no retrieval or ranking cache (the cold path)",
    )
    parser.add_argument("--qdrant-url", help="a Qdrant server; default: the embedded Edge shard")
    parser.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="API processes (API_WORKERS); embedded, they share one index owner",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--consumers", type=int, default=1, help="feed-consumer processes on the backlog")
    parser.add_argument("--profile", action="store_true", help="sample the API and the consumer with py-spy")
    parser.add_argument(
        "--ranker",
        choices=("none", "learned"),
        default="learned",
        help="the ranker of the feed phases: a deployed model of the shipped size, or none (the formula)",
    )
    parser.add_argument("--ranker-runs", type=int, default=300, help="runs of each direct ranker measurement")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="feed-bench-"))
    failed = True
    redis_port, api_port, host_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = [start_server(redis_port, folder / "redis")]
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    ranking: dict[str, float] = {**budgets(args.candidates, args.phoenix_share)}
    if args.no_caches:
        ranking["retrieval_cache_ttl_s"] = ranking["ranking_cache_ttl_s"] = 0
    settings = Settings(redis_url=redis_url, data_dir=folder, qdrant_url=args.qdrant_url)
    settings = settings.model_copy(update={"ranking": settings.ranking.model_copy(update=ranking)})
    index: VectorIndex
    if args.qdrant_url:
        index = ServerVectorIndex(args.qdrant_url, settings.qdrant_collection, space_dims(settings))
    else:
        # optimised once, when the last posts are in (rather than 20k at a time, merging as
        # it grows): the recall measurement below opens it and builds its graphs
        index = EdgeVectorIndex(live_folder(settings.qdrant_path()), space_dims(settings), args.posts + 1)
    spec = CorpusSpec(posts=args.posts, authors=args.authors, users=args.users)
    report: dict[str, Any] = {
        "spec": spec.__dict__,
        "ranking": ranking,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    reserved = first_users_needed(args.rate, args.first_share, args.duration)
    if reserved > args.users // 2:
        parser.error(f"--users {args.users}: the open loop's first feeds need {reserved}, at most half")
    try:
        print(f"writing {args.posts} posts, {args.users} users ...", flush=True)
        corpus = build(settings, index, spec)
        report["corpus_seconds"] = corpus.seconds
        # the open loop's first feeds are for users the closed loop never asks for
        closed_users, first_users = corpus.users[:-reserved], corpus.users[-reserved:]
        print("measuring the vector index's recall against an exact scan ...", flush=True)
        report["ann_recall_at_100"] = ann_recall(open_vector_index(settings), corpus)
        # the index was written directly: its group starts at the stream's end, as after the
        # owner's own rebuild (an owner that finds no group rebuilds its shard)
        with redis.Redis.from_url(redis_url) as r:
            r.xgroup_create(keys.INDEX_STREAM, keys.INDEX_GROUP, id="$", mkstream=True)
        runs = args.ranker_runs
        print(f"training, compiling and measuring the learned ranker ({runs} runs) ...", flush=True)
        model, report["ranker"] = learned.prepare(
            settings, corpus.users[0], corpus.graph[corpus.users[0]]["following"], runs
        )
        if args.ranker == "learned":  # loaded (and its object file) by each API process as it starts
            asyncio.run(learned.deploy(settings, model))
        print("writing the catalogue snapshot the API processes start from ...", flush=True)
        asyncio.run(write_catalog_snapshot(settings))
        write_graph(corpus, folder / "graph.json")
        procs.append(
            subprocess.Popen([sys.executable, "-m", "bench.host", str(folder / "graph.json"), str(host_port)])
        )
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATA_DIR": str(folder),
            "API_PORT": str(api_port),
            "BACKEND_URL": f"http://127.0.0.1:{host_port}",
            "LOG_LEVEL": "WARNING",
            "API_WORKERS": str(args.api_workers),
            "RANKING": json.dumps(ranking),
            "HF_HUB_OFFLINE": "1",
            **({"QDRANT_URL": args.qdrant_url} if args.qdrant_url else {}),
        }
        bin_dir = Path(sys.executable).parent
        api = subprocess.Popen([str(bin_dir / "feed-api")], env=env)
        procs.append(api)
        url = f"http://127.0.0.1:{api_port}"
        wait_replicas(url, args.api_workers)
        wait_http(f"{url}/ready")  # the index owner answers too (it opens the shard as the API starts)
        wait_http(f"http://127.0.0.1:{host_port}/internal/social-graph/u0/")
        report["candidates"], served = candidates_seen(url, corpus.users[0], args.limit)
        report["ranker"]["served"] = served
        expected = ("learned", model.version) if args.ranker == "learned" else ("formula", None)
        if (served["kind"], served["version"]) != expected:
            raise RuntimeError(f"the feeds are ranked by {served}, not {expected}")
        stages_before = stage_totals(url)
        first_spy = None
        if args.profile:  # the first feeds' first `duration` seconds
            first_spy = py_spy(api.pid, folder / "first-profile.txt", int(args.duration))
        warm = asyncio.run(  # every user's feed once: the retrieval caches hold every user
            closed_loop(
                "warm-up",
                f"{url}/feed",
                lambda i: {"user_id": closed_users[i], "limit": args.limit},
                args.concurrency,
                900.0,
                200,
                requests=len(closed_users),
            )
        )
        report["warm_up"] = warm.summary()
        # each user's first feed ranks its window in full (and no `explain`): the stage that computed
        # the window's features (the learned ranker, else the feature logger) in the API
        report["ranker"]["served"]["stages"] = stage_means(stages_before, stage_totals(url))
        if first_spy is not None:
            first_spy.wait(60)
            report["first_profile"] = profile_top(folder / "first-profile.txt")
        report["stages_warm"] = explain(url, corpus.users[1], args.limit)
        spy = None
        if args.profile:
            spy = py_spy(api.pid, folder / "profile.txt", int(args.duration))
        hits_before, misses_before = ranking_cache_lookups(url)
        feed, took = feed_phase(url, closed_users, args.limit, args.concurrency, args.duration)
        hits, misses = ranking_cache_lookups(url)
        if spy is not None:
            spy.wait(60)
            report["profile"] = profile_top(folder / "profile.txt")
        # the pipeline's own time: rankings, not kept ones (they expire after the cache's TTL;
        # the retrievals stay cached, as for any user seen within minutes)
        time.sleep(settings.ranking.ranking_cache_ttl_s + 1)
        _, alone = feed_phase(url, closed_users, args.limit, 1, min(args.duration, 5.0))
        report["feed_alone_took_p50_ms"] = float(np.percentile(alone, 50))
        opened = open_loop_phase(
            url, first_users, closed_users, args.limit, args.rate, args.first_share, args.duration
        )
        report["open_loop"] = {
            "rate": opened.rate,
            "first_share": args.first_share,
            "max_send_lag_ms": opened.max_send_lag_ms,
            **{kind: result.summary() for kind, result in opened.kinds.items()},
        }
        floor = numpy_floor(corpus.vectors, report["candidates"]["after_duplicates"], args.limit)
        report["feed"] = feed.summary()
        report["feed"]["server_took_p50_ms"] = float(np.percentile(took, 50)) if took else 0.0
        looked_up = hits - hits_before + misses - misses_before
        report["feed"]["ranking_cache_hit_share"] = (hits - hits_before) / looked_up if looked_up else 0.0
        report["floor_ms"] = floor
        report["api_memory_mb"] = memory_mb(api.pid)
        report["raw_vector_mb"] = corpus.vectors.nbytes / 2**20
        interactions = interaction_phase(url, corpus, args.concurrency * 2, args.duration)
        report["interaction"] = interactions.summary()
        consumer_profile = folder / "consumer-profile.txt" if args.profile else None
        report["consumer"] = run_consumer(
            env, redis_url, len(interactions.latencies_ms), consumer_profile, args.consumers
        )
        if consumer_profile is not None and consumer_profile.exists():
            report["consumer_profile"] = profile_top(consumer_profile)
        failed = False
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not failed:
            shutil.rmtree(folder, ignore_errors=True)

    f, i, c, w = report["feed"], report["interaction"], report["consumer"], report["warm_up"]
    alone = report["feed_alone_took_p50_ms"]
    ratio = alone / floor["gathered"]
    table = "\n".join(
        [
            f"{args.posts} posts, {report['candidates']['after_duplicates']} candidates, limit {args.limit}, "
            f"concurrency {args.concurrency}, {args.duration:.0f} s per phase, {args.api_workers} API "
            f"process(es); {platform.machine()}, "
            f"{os.cpu_count()} CPUs; index: {'Qdrant server' if args.qdrant_url else 'embedded Qdrant Edge'}"
            "; "
            f"nearest-neighbour share {args.phoenix_share:.0%}, retrieval and ranking caches "
            f"{'off' if args.no_caches else 'on'}",
            "",
            "| figure | value |",
            "|---|---|",
            f"| POST /feed, each user's first feed (retrieval not cached yet) | {w['req_per_s']:.0f} req/s; "
            f"p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms; {w['errors']:.0f} errors |",
            f"| POST /feed, users seen before (random users, {args.duration:.0f} s) | "
            f"{f['req_per_s']:.0f} req/s; "
            f"p50 {f['p50_ms']:.1f} ms, p90 {f['p90_ms']:.1f}, "
            f"p99 {f['p99_ms']:.1f}, max {f['max_ms']:.1f}; {f['errors']:.0f} errors; ranking cache hits "
            f"{f['ranking_cache_hit_share']:.0%} |",
            f"| /feed pipeline, one request at a time (server `took_ms`, p50) / numpy floor, gathered "
            f"({floor['gathered']:.2f} ms; contiguous {floor['contiguous']:.2f} ms) | "
            f"{alone:.1f} ms / {floor['gathered']:.2f} ms = {ratio:.1f}x (under load: "
            f"{f['server_took_p50_ms']:.1f} ms) |",
            *open_loop_rows(report["open_loop"]),
            f"| vector index recall@100 against an exact scan (100 random queries) | "
            f"{report['ann_recall_at_100']:.3f} |",
            f"| POST /interaction | {i['req_per_s']:.0f} req/s accepted; p50 {i['p50_ms']:.1f} ms, "
            f"p99 {i['p99_ms']:.1f} ms; {i['errors']:.0f} errors |",
            f"| event consumer ({args.consumers} process(es)) | {c['events_per_s']:.0f} events/s "
            f"({c['events']:.0f} events in {c['seconds']:.1f} s) |",
            f"| API memory | {report['api_memory_mb']['total']:.0f} MB proportional "
            f"({report['api_memory_mb']['anon']:.0f} MB anonymous, {report['api_memory_mb']['file']:.0f} MB "
            f"mapped files; {report['api_memory_mb']['rss']:.0f} MB resident); "
            f"raw post vectors {report['raw_vector_mb']:.0f} MB |",
            *ranker_rows(report["ranker"]),
        ]
    )
    print(table)
    for title, key in (
        ("the API during first feeds", "first_profile"),
        ("the API during /feed for users seen before", "profile"),
        ("the event consumer", "consumer_profile"),
    ):
        for kind, rows in report.get(key, {}).items():
            print(f"profile of {title}, {kind} share of samples:")
            for frame, share in rows:
                print(f"  {share:6.1%}  {frame}")
    print("stages of one warm request (ms, candidates out, status):")
    for name, row in report["stages_warm"].items():
        print(f"  {name:40s} {row[0]:9.2f} {row[1]:7d} {row[2]}")
    args.out.mkdir(parents=True, exist_ok=True)
    report["machine"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    report["run_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = args.out / f"serving-{size_label(args.posts)}.json"
    path.write_text(json.dumps({**headline(report, args.posts, args.api_workers), **report}, indent=2) + "\n")
    print(f"wrote {path}")


def open_loop_rows(figures: dict[str, Any]) -> list[str]:
    """The open loop's rows of the table, one per kind of feed."""
    names = {"first_feed": "users' first feeds", "returning": "returning users"}
    return [
        f"| open loop, {figures['rate']:.0f} feeds/s ({figures['first_share']:.0%} first feeds), "
        f"{names[kind]}, timed from each request's scheduled send | "
        f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, p99.9 {f['p999_ms']:.1f} ms; "
        f"{f['requests']:.0f} answered, {f['errors']:.0f} errors; sender lag at worst "
        f"{figures['max_send_lag_ms']:.0f} ms |"
        for kind, f in ((k, figures[k]) for k in names if k in figures)
    ]


def headline(report: dict[str, Any], posts: int, api_workers: int) -> dict[str, Any]:
    """The figures the targets are about, at the top of the report (the rest follows)."""
    opened = report["open_loop"]
    return {
        "posts": posts,
        "api_workers": api_workers,
        "closed_loop": {
            "first_feed_rps": report["warm_up"]["req_per_s"],
            "returning_rps": report["feed"]["req_per_s"],
        },
        "open_loop": {
            **opened,
            "first_feed_p99_ms": opened["first_feed"]["p99_ms"],
            "returning_p99_ms": opened["returning"]["p99_ms"],
        },
        "floor_ratio": report["feed_alone_took_p50_ms"] / report["floor_ms"]["gathered"],
        "ann_recall_at_100": report["ann_recall_at_100"],
        "memory_mb": report["api_memory_mb"]["total"],
        "raw_vector_mb": report["raw_vector_mb"],
    }


if __name__ == "__main__":
    main()
