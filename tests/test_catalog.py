"""The in-process post catalogue: its columns and lookups, and `CatalogSync` keeping it in step
with Redis (the snapshot at start, then the index and changes streams) on a real server."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis

from feed.events.apply import EventApplier
from feed.stores import keys
from feed.stores.catalog.model import ACTION_COLUMN, DOT_BLOCK, NO_ROW, QUANT, PostCatalog, quantize
from feed.stores.catalog.sync import CatalogSync
from feed.stores.feature_store import FeatureStore
from feed.stores.interaction_writes import InteractionWrites
from feed.stores.post_store import PostStore, commit_ingested
from feed.stores.records import PostRecord, vector_to_bytes
from feed.stores.streams import mark, set_mark, trim_consumed
from feed.stores.trending import TrendingBase
from tests.helpers import unit
from tests.test_event_apply import event

DIMS = {"text": 384, "image": 512}


def rec(key: str, author: str, created_at: float, image: bool = False) -> PostRecord:
    vectors = {"text": unit(1, len(key))}
    if image:
        vectors["image"] = unit(1, dim=512)
    return PostRecord(key, f"id-{key}", f"host-{author}", author, created_at, "text", key, vectors)


def test_columns_lookups_and_timelines() -> None:
    catalog = PostCatalog(DIMS, capacity=2)  # grows as posts come
    now = time.time()
    catalog.upsert([rec(f"a{i}", "a", now - i) for i in range(5)] + [rec("b0", "b", now - 100, image=True)])
    assert len(catalog) == 6 and catalog.rows_of(["a0", "nope", "b0"]).tolist() == [0, NO_ROW, 5]
    assert catalog.post_ids[0] == "id-a0" and catalog.author_ids[catalog.author[5]] == "host-b"
    assert catalog.has["image"][:6].tolist() == [False] * 5 + [True]
    # stored as int8: within half a step (the largest component / 127) of the vector
    assert np.allclose(catalog.gather("text", np.array([3]))[0], unit(1, 2), rtol=0, atol=0.9 / 254)
    authors = catalog.authors_of(frozenset({"a", "b", "unknown"}))
    assert sorted(authors.tolist()) == [catalog.author_codes["a"], catalog.author_codes["b"]]
    newest = catalog.newest_by(authors, per_author=2, newer_than=now - 50)
    assert sorted(catalog.keys[r] for r in newest) == ["a0", "a1"]  # b0 is too old
    assert [catalog.keys[r] for r in catalog.newest(3)] == ["a0", "a1", "a2"]
    only_b = catalog.authors_of(frozenset({"b"}))
    assert catalog.latest_post_time(authors) == now and catalog.latest_post_time(only_b) == now - 100
    # removing a post drops it everywhere, and the cached newest list follows
    assert catalog.remove(["a0", "never"]) == 1
    assert catalog.rows_of(["a0"]).tolist() == [NO_ROW] and not catalog.alive[0]
    assert [catalog.keys[r] for r in catalog.newest(2)] == ["a1", "a2"]
    assert sorted(catalog.keys[r] for r in catalog.newest_by(authors, 2, now - 50)) == ["a1", "a2"]
    assert catalog.latest_post_time(authors) == now - 1  # a0 left; a1 is a's newest
    # an author's first post gives them a code: a remembered set of authors follows
    catalog.upsert([rec("u0", "unknown", now - 200)])
    assert len(catalog.authors_of(frozenset({"a", "b", "unknown"}))) == 3
    # re-ingesting a post keeps its row
    catalog.upsert([rec("a1", "a", now)])
    assert catalog.rows_of(["a1"]).tolist() == [1] and len(catalog) == 6  # five left, plus u0


def test_quantized_vectors_keep_cosines_within_two_thousandths() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 384)).astype(np.float32) * rng.uniform(0.01, 10, (500, 1))
    stored, scales = quantize(vectors)
    assert stored.dtype == np.int8 and np.abs(stored).max(axis=1).min() == QUANT
    assert np.abs(stored * scales[:, None] - vectors).max(axis=1).max() <= scales.max() / 2 + 1e-6
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = PostCatalog(DIMS)
    catalog.upsert([rec(f"p{i}", "a", 0.0) for i in range(500)])
    catalog.upsert(
        [PostRecord(f"p{i}", i, "h", "a", 0.0, "text", "", {"text": v}) for i, v in enumerate(units)]
    )
    query = units[0]
    error = np.abs(catalog.dots("text", np.arange(500), query[None])[:, 0] - units @ query)
    assert error.max() < 2e-3 and error.mean() < 5e-4
    zero, scale = quantize(np.zeros((1, 4), np.float32))
    assert not zero.any() and scale[0] == 1.0


def test_dots_equal_the_gathered_product_across_blocks() -> None:
    catalog = PostCatalog(DIMS)
    n = 2 * DOT_BLOCK + 7  # two whole blocks and a part
    catalog.upsert([rec(f"p{i}", "a", 0.0) for i in range(n)])
    rows = np.random.default_rng(0).permutation(n)[: n - 3]
    by = np.stack([unit(7), unit(8)])
    expected = catalog.gather("text", rows) @ by.T
    assert np.allclose(catalog.dots("text", rows, by), expected, atol=1e-6)
    assert catalog.dots("text", rows[:0], by).shape == (0, 2)


def test_features_trending_and_cf() -> None:
    catalog = PostCatalog(DIMS)
    now = time.time()
    catalog.upsert([rec("x", "a", now), rec("y", "a", now), rec("z", "b", now)])
    catalog.set_counts({"x": {"like": 3, "report": 1, "not-an-action": 9}, "gone": {"like": 1}})
    assert catalog.counts[0, ACTION_COLUMN["like"]] == 3 and catalog.counts[0].sum() == 4
    half_life = 3600.0
    catalog.set_trending(TrendingBase(now - half_life, half_life), {"y": 8.0, "z": 2.0})
    assert [catalog.keys[r] for r in catalog.top_trending(5)] == ["y", "z"]  # x has none
    assert catalog.trending_values(catalog.rows_of(["y", "x"]), now) == pytest.approx([4.0, 0.0])
    catalog.set_trending(catalog.trending_base, {"x": 20.0})
    assert [catalog.keys[r] for r in catalog.top_trending(1)] == ["x"]  # the cache followed
    catalog.set_impressions({"x": 7})
    catalog.set_reach({"b": 11, "nobody": 1})
    assert catalog.impressions[0] == 7 and catalog.reach[catalog.author_codes["b"]] == 11
    catalog.set_cf(3, {"x": np.ones(4, np.float32), "z": np.ones(2, np.float32)}, dim=4)
    assert catalog.cf_version == 3 and catalog.cf_known[:3].tolist() == [True, False, False]


def test_trending_horizons_decay_each_at_its_stored_half_life() -> None:
    day = 86400.0
    catalog = PostCatalog(DIMS, capacity=2, horizons_s=(day, 10 * day))
    now = time.time()
    catalog.upsert([rec("x", "a", now), rec("y", "a", now)])
    rows = catalog.rows_of(["x", "y"])
    assert catalog.horizon_values(rows, now).tolist() == [[0.0, 0.0], [0.0, 0.0]]  # no base yet
    catalog.set_horizons([TrendingBase(now - day, day), None], [{"x": 8.0, "gone": 1.0}, {}])
    catalog.upsert([rec("z", "b", now)])  # grows the columns
    first = catalog.horizon_bases[0]
    catalog.set_horizons([first, TrendingBase(now, 10 * day)], [{}, {"y": 2.0, "z": 3.0}])
    rows = catalog.rows_of(["x", "y", "z"])
    assert catalog.horizon_values(rows, now + 10 * day) == pytest.approx(
        np.array([[8.0 / 2**11, 0.0], [0.0, 1.0], [0.0, 1.5]])
    )
    catalog.remove(["z"])
    assert catalog.horizon_values(rows[2:], now).tolist() == [[0.0, 0.0]]
    catalog.set_horizons(catalog.horizon_bases, [{"y": 1.0}, {}], reset=True)
    assert catalog.horizon_values(rows[:2], now + day).tolist() == [[0.0, 0.0], [0.25, 0.0]]


async def test_sync_loads_then_follows_every_writer(settings: Any, redis_client: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    now = time.time()
    for key in ("p1", "p2"):
        await PostStore(redis_client).mark_queued(key, "t")
        assert commit_ingested(r, rec(key, "a", now))
    await redis_client.zincrby(keys.IMPRESSIONS, 4, "p2")
    catalog = PostCatalog(DIMS, horizons_s=settings.ranking.trending_horizons_s)
    sync = CatalogSync(redis_client, catalog)
    assert await sync.load() == 2
    assert catalog.impressions[catalog.rows["p2"]] == 4

    # the event consumer: counts, trending and reach arrive through the changes stream
    await EventApplier(InteractionWrites(redis_client, settings), settings).apply(
        [event("e1", "p1"), event("e2", "p1", "share")]
    )
    # an ingest worker: a new post arrives through the index stream
    assert commit_ingested(r, rec("p3", "b", now + 1))
    # the impression side effect of another replica
    await FeatureStore(redis_client).record_impressions(["p1", "p3"])
    assert await sync.poll() > 0
    row = catalog.rows["p1"]
    assert (
        catalog.counts[row, ACTION_COLUMN["like"]] == 1 and catalog.counts[row, ACTION_COLUMN["share"]] == 1
    )
    assert catalog.trending_values(np.array([row]), time.time())[0] > 0
    assert (catalog.horizon_values(np.array([row]), time.time()) > 0).all()
    assert catalog.reach[catalog.author_codes["a"]] == 2
    assert catalog.impressions[catalog.rows["p3"]] == 1 and catalog.keys[catalog.newest(1)[0]] == "p3"

    # deletion, and a retrained CF model
    await PostStore(redis_client).delete("p2")
    await redis_client.hset(keys.CF_ITEMS, "p1", vector_to_bytes(np.ones(4, np.float32)))
    await redis_client.hset(keys.CF_META, mapping={"version": 5, "factors": 4})
    await redis_client.xadd(keys.INDEX_STREAM, {"op": "cf", "post": ""})
    await sync.poll()
    assert "p2" not in catalog.rows and len(catalog) == 2
    assert catalog.cf_version == 5 and catalog.cf_known[row]

    # replaying what was already applied changes nothing: values are read, not added
    before = catalog.counts.copy()
    again = CatalogSync(redis_client, catalog)
    again._positions = {keys.INDEX_STREAM: "0-0", keys.CHANGES_STREAM: "0-0"}
    await again.poll()
    assert np.array_equal(before, catalog.counts) and "p2" not in catalog.rows
    r.close()


async def test_a_reader_behind_the_trimmed_changes_stream_reloads(settings: Any, redis_client: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for i in range(6):
        assert commit_ingested(r, rec(f"p{i}", "a", time.time()))
    catalog = PostCatalog(DIMS)
    sync = CatalogSync(redis_client, catalog, batch=2)
    await sync.load()
    for i in range(6):
        await EventApplier(InteractionWrites(redis_client, settings), settings).apply(
            [event(f"e{i}", f"p{i}")]
        )
    await redis_client.xtrim(keys.CHANGES_STREAM, maxlen=2, approximate=False)  # four were lost to us
    await sync.poll()
    assert catalog.counts[:6, ACTION_COLUMN["like"]].tolist() == [1] * 6
    r.close()


def same_catalog(a: PostCatalog, b: PostCatalog) -> None:
    """The same posts, vectors, columns, authors and timelines (rows may differ)."""
    assert sorted(a.rows) == sorted(b.rows)
    keys_ = sorted(a.rows)
    ra, rb = a.rows_of(keys_), b.rows_of(keys_)
    for space in a.vectors:
        assert np.array_equal(a.gather(space, ra), b.gather(space, rb))
        assert np.array_equal(a.has[space][ra], b.has[space][rb])
    for name in ("created_at", "counts", "trending", "horizons", "impressions", "cf_known"):  # codes differ
        assert np.array_equal(getattr(a, name)[ra], getattr(b, name)[rb]), name
    assert [a.author_keys[c] for c in a.author[ra]] == [b.author_keys[c] for c in b.author[rb]]
    assert (a.trending_base, a.horizon_bases, a.cf_version) == (
        b.trending_base,
        b.horizon_bases,
        b.cf_version,
    )
    for author in a.author_keys:
        assert [a.keys[r] for r in a.newest_by(a.authors_of(frozenset({author})), 10, 0)] == [
            b.keys[r] for r in b.newest_by(b.authors_of(frozenset({author})), 10, 0)
        ]


async def test_a_process_starts_from_the_snapshot_and_reads_only_what_came_since(
    settings: Any, redis_client: Any, tmp_path: Any
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    now = time.time()
    for i in range(5):
        assert commit_ingested(r, rec(f"p{i}", f"a{i % 2}", now + i, image=i == 0))
    await EventApplier(InteractionWrites(redis_client, settings), settings).apply([event("e1", "p1")])
    root = tmp_path / "catalog"
    writer = CatalogSync(redis_client, PostCatalog(DIMS), snapshots=root, writes_snapshots=True)
    assert await writer.load() == 5
    folder = await writer.save_snapshot()
    # what comes after the snapshot: a new post, a deletion, engagement
    assert commit_ingested(r, rec("p5", "a1", now + 5))
    await PostStore(redis_client).delete("p2")
    await EventApplier(InteractionWrites(redis_client, settings), settings).apply([event("e2", "p3")])
    await redis_client.xtrim(
        keys.INDEX_STREAM, maxlen=3, approximate=False
    )  # only what the mark keeps is left
    started = PostCatalog(DIMS)
    reader = CatalogSync(redis_client, started, snapshots=root)
    assert await reader.load() == 5  # the snapshot's five
    assert isinstance(started.vectors["text"], np.memmap)  # mapped, not read: shared with other processes
    while await reader.poll():
        pass
    fresh = PostCatalog(DIMS)
    await CatalogSync(redis_client, fresh).load()
    same_catalog(started, fresh)
    assert "p5" in started.rows and "p2" not in started.rows
    on_disk = np.load(folder / "vectors.text.npy")
    assert not on_disk[started.rows["p5"]].any()  # a new post's row is this process's own page
    r.close()


async def test_a_snapshot_whose_stream_entries_are_gone_is_not_used(
    settings: Any, redis_client: Any, tmp_path: Any
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for i in range(3):
        assert commit_ingested(r, rec(f"p{i}", "a", time.time()))
    root = tmp_path / "catalog"
    writer = CatalogSync(redis_client, PostCatalog(DIMS), snapshots=root, writes_snapshots=True)
    await writer.load()
    await writer.save_snapshot()
    assert commit_ingested(r, rec("p3", "a", time.time()))
    for group in await redis_client.xinfo_groups(keys.INDEX_STREAM):  # the mark dropped (its writer gone)
        await redis_client.xgroup_destroy(keys.INDEX_STREAM, group["name"])
    await redis_client.xtrim(keys.INDEX_STREAM, maxlen=0, approximate=False)
    catalog = PostCatalog(DIMS)
    assert await CatalogSync(redis_client, catalog, snapshots=root).load() == 4  # read from Redis instead
    r.close()


async def test_a_mark_holds_entries_against_trimming_until_it_holds_back_one_older_than_the_idle_limit(
    redis_client: Any,
) -> None:
    await set_mark(redis_client, keys.INDEX_STREAM, "quiet", "0-0")  # taken before any entry
    await trim_consumed(redis_client, keys.INDEX_STREAM, drop_idle_s=3600)
    assert await mark(redis_client, keys.INDEX_STREAM, "quiet") == "0-0"  # nothing old held back
    await redis_client.xgroup_destroy(keys.INDEX_STREAM, "mark-quiet")
    first = await redis_client.xadd(keys.INDEX_STREAM, {"op": "upsert", "post": "a"})
    await redis_client.xadd(keys.INDEX_STREAM, {"op": "upsert", "post": "b"})
    await set_mark(redis_client, keys.INDEX_STREAM, "snap", first.decode())
    await trim_consumed(redis_client, keys.INDEX_STREAM, drop_idle_s=3600)
    assert await redis_client.xlen(keys.INDEX_STREAM) == 2  # kept: its mark is recent
    assert await mark(redis_client, keys.INDEX_STREAM, "snap") == first.decode()
    await redis_client.xadd("old", {"op": "upsert", "post": "c"}, id="2-0")  # ages old
    await set_mark(redis_client, "old", "snap", "1-0")
    await trim_consumed(redis_client, "old", drop_idle_s=3600)
    assert await mark(redis_client, "old", "snap") is None  # a live writer would have moved it on
