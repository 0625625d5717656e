"""The serving benchmark's corpus generator, load generator and learned-ranker figures, at toy sizes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import ranker as learned
from bench.corpus import CorpusSpec, build
from bench.load import closed_loop
from bench.serving import ranker_rows
from feed.stores import keys
from feed.stores.feature_store import FeatureStore
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.vectors import space_dims


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
