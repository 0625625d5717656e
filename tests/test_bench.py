"""The serving benchmark's corpus generator, load generator and learned-ranker figures, at toy sizes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import ranker as learned
from bench.corpus import CorpusSpec, build
from bench.load import closed_loop, open_loop
from bench.serving import ann_recall, headline, open_loop_rows, ranker_rows, size_label
from feed.stores import keys
from feed.stores.feature_store import FeatureStore
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.vectors import Queries, VectorHit, space_dims


async def test_corpus_is_written_through_the_stores(settings: Any, redis_client: Any, tmp_path: Path) -> None:
    spec = CorpusSpec(posts=300, authors=30, users=10, events_per_user=5, follows_per_user=8)
    corpus = await asyncio.to_thread(
        build, settings, EdgeVectorIndex(tmp_path / "shard", space_dims(settings)), spec
    )
    assert len(corpus.post_keys) == 300 and corpus.vectors.shape == (300, 384)
    assert np.allclose(np.linalg.norm(corpus.vectors, axis=1), 1.0, atol=1e-5)
    records = await FeatureStore(redis_client).posts(corpus.post_keys)
    assert len(records) == 300
    assert not await redis_client.exists(keys.INDEX_STREAM)  # written to the index directly
    index = EdgeVectorIndex(tmp_path / "shard", space_dims(settings))
    assert await index.count() == 300
    await index.close()
    user = await FeatureStore(redis_client).user_features("u0")
    assert user.events == 5 and "text" in user.vectors
    assert all(0 < len(g["following"]) <= 8 for g in corpus.graph.values())
    per_author = Counter(r.author_key for r in records.values())
    sizes = sorted([per_author[f"a{a}"] for a in range(30)], reverse=True)
    assert sizes[0] > 3 * sizes[15]  # power-law authors: the biggest far above the median


async def test_the_index_recall_is_measured_against_an_exact_scan(settings: Any) -> None:
    spec = CorpusSpec(posts=300, authors=30, users=10, events_per_user=5, follows_per_user=8)
    shard = settings.qdrant_path()
    corpus = await asyncio.to_thread(build, settings, EdgeVectorIndex(shard, space_dims(settings)), spec)
    index = EdgeVectorIndex(shard, space_dims(settings))
    assert await asyncio.to_thread(ann_recall, index, corpus) >= 0.95

    class FirstPosts(EdgeVectorIndex):  # answers the same 100 posts whatever the query
        async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
            return [VectorHit(key, 1.0) for key in corpus.post_keys[:limit]]

    wrong = await asyncio.to_thread(ann_recall, FirstPosts(shard, space_dims(settings)), corpus)
    assert 0.2 < wrong < 0.5  # a third of the 300 posts: a third of each exact top 100, about


def test_the_report_is_kept_under_its_size_with_the_target_figures_on_top() -> None:
    assert [size_label(n) for n in (100_000, 1_000_000, 5_000, 1234)] == ["100k", "1m", "5k", "1234"]
    latency = {"p50_ms": 5.0, "p99_ms": 20.0, "p999_ms": 40.0, "requests": 1000.0, "errors": 0.0}
    report: dict[str, Any] = {
        "warm_up": {"req_per_s": 300.0},
        "feed": {"req_per_s": 600.0},
        "open_loop": {
            "rate": 100.0,
            "first_share": 0.25,
            "max_send_lag_ms": 3.0,
            "first_feed": {**latency, "p99_ms": 25.0},
            "returning": latency,
        },
        "feed_alone_took_p50_ms": 3.0,
        "floor_ms": {"gathered": 2.0},
        "ann_recall_at_100": 0.97,
        "api_memory_mb": {"total": 900.0},
        "raw_vector_mb": 146.0,
    }
    top = headline(report, 100_000, 2)
    assert top["posts"] == 100_000 and top["api_workers"] == 2
    assert top["closed_loop"] == {"first_feed_rps": 300.0, "returning_rps": 600.0}
    assert top["open_loop"]["rate"] == 100.0
    assert top["open_loop"]["first_feed_p99_ms"] == 25.0 and top["open_loop"]["returning_p99_ms"] == 20.0
    assert top["floor_ratio"] == 1.5 and top["ann_recall_at_100"] == 0.97
    assert top["memory_mb"] == 900.0 and top["raw_vector_mb"] == 146.0
    rows = open_loop_rows(report["open_loop"])
    assert len(rows) == 2 and "p99.9 40.0 ms" in rows[1]


async def test_the_learned_ranker_is_measured_on_the_corpus(settings: Any, tmp_path: Path) -> None:
    spec = CorpusSpec(posts=300, authors=30, users=10, events_per_user=5, follows_per_user=8)
    corpus = await asyncio.to_thread(
        build, settings, EdgeVectorIndex(tmp_path / "shard", space_dims(settings)), spec
    )
    settings = settings.model_copy(
        update={"ranking": settings.ranking.model_copy(update={"ranker_max_trees": 12})}
    )
    following = corpus.graph["u0"]["following"]
    model, figures = await asyncio.to_thread(learned.prepare, settings, "u0", following, 5, 30, 50)
    assert model.compiled is not None and (settings.data_dir / "ranker" / f"{model.version}.o").exists()
    assert figures["trees"] == 12 and figures["features"] == len(model.features)  # every round, no early stop
    assert figures["window"] == 300  # the tiny corpus: every post
    for kind in ("lightgbm", "compiled"):
        assert 0 < figures["predict_ms_1000"][kind]["p50"] <= figures["predict_ms_1000"][kind]["p99"]
    assert 0 < figures["rerank_ms_1000"]["p50"] <= figures["rerank_ms_1000"]["p99"]
    assert figures["contributions_ms_50"]["p50"] > 0
    stages = {"learned_ranker": {"mean_ms": 2.0, "runs": 3.0}}
    figures["served"] = {"kind": "learned", "version": model.version, "status": "ok", "stages": stages}
    assert "learned ranker stage on a 300-candidate window" in "\n".join(ranker_rows(figures))


async def test_the_load_generator_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await closed_loop("x", "http://example.com/feed", lambda i: {}, 1, 0.1, 200)


def _stalling_server() -> tuple[str, Callable[[], None]]:
    """A loopback HTTP server, on its own thread and event loop, whose handler blocks that loop
    for 0.5 s when the body asks (as a request holding an API process's GIL would)."""
    import threading

    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        if (await request.json()).get("stall"):
            time.sleep(0.5)
        return web.json_response({})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/feed", handle)
    runner = web.AppRunner(app)
    ports: list[int] = []
    ready = threading.Event()

    def serve() -> None:
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    port = ports[0]

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return f"http://127.0.0.1:{port}/feed", stop


async def test_the_open_loop_times_requests_from_their_schedule_so_a_stall_shows_in_all_it_held() -> None:
    url, stop = _stalling_server()
    try:
        # 100 requests/s for 1 s; request 10 blocks the server for 0.5 s
        result = await open_loop(
            url, lambda i: ("stall" if i == 10 else "other", {"stall": i == 10}), 100.0, 1.0, 200
        )
    finally:
        stop()
    other = result.kinds["other"]
    assert len(other.latencies_ms) + other.errors == 99 and other.errors == 0
    assert result.kinds["stall"].latencies_ms[0] >= 500
    # the ~50 requests due during the stall went out on time and waited for it: each is timed
    # from its schedule (a closed loop would have held them back and timed only the first)
    assert (other.latencies_ms > 200).sum() >= 20, other.latencies_ms
    assert result.max_send_lag_ms < 200
    assert other.summary()["p999_ms"] >= other.summary()["p99_ms"]


def test_spoken_clips_are_speech_of_the_length_asked_for() -> None:
    import shutil
    import wave
    from io import BytesIO

    from bench.samples import spoken_wavs

    if shutil.which("espeak-ng") is None:
        pytest.skip("Debian's espeak-ng is not installed")
    clips = spoken_wavs(2, 3.0)
    for clip in clips:
        with wave.open(BytesIO(clip)) as w:
            assert w.getnframes() == int(3.0 * w.getframerate()) and w.getnchannels() == 1
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert np.abs(audio).max() > 1000  # not silence
    assert clips[0] != clips[1]  # each starts on another sentence
