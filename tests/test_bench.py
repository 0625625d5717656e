"""The serving benchmark's corpus generator and load generator, at toy sizes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.corpus import CorpusSpec, build
from bench.load import closed_loop
from feed.stores import keys
from feed.stores.feature_store import FeatureStore
from feed.stores.vectors import EdgeVectorIndex, space_dims


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


async def test_the_load_generator_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await closed_loop("x", "http://example.com/feed", lambda i: {}, 1, 0.1, 200)
