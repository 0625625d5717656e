"""Post lifecycle, the vector indexes (embedded and qdrant-client) and index sync, on real stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from feed.replica import claim_replica
from feed.stores import keys
from feed.stores.feature_store import FeatureStore
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.remote import RemoteVectorIndex, serve_searches
from feed.stores.index.server import ServerVectorIndex
from feed.stores.index.sync import IndexSync
from feed.stores.index.vectors import VectorIndex
from feed.stores.messages import unpack_keys
from feed.stores.post_store import PostStore, commit_ingested
from feed.stores.records import PostRecord
from tests.helpers import unit, wait_for

DIMS = {"text": 384, "image": 512, "cf": 4}


def rec(key: str, author: str, vector: np.ndarray | None, image: np.ndarray | None = None) -> PostRecord:
    vectors = {"text": vector} if vector is not None else {}
    if image is not None:
        vectors["image"] = image
    return PostRecord(key, key, author, author, time.time(), "text", key, vectors)


def text(*values: float) -> list[tuple[str, np.ndarray]]:
    return [("text", unit(*values))]


async def test_commit_is_atomic_idempotent_and_respects_deletion(settings: Any, redis_client: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    posts = PostStore(redis_client)
    await posts.mark_queued("1", "t1")
    assert commit_ingested(r, rec("1", "a", unit(1)))
    written = sorted(await redis_client.keys("*"))
    assert written == sorted(k.encode() for k in (keys.post("1"), keys.post_state("1"), keys.INDEX_STREAM))
    assert commit_ingested(r, rec("1", "a", unit(1)))  # same post again: the same keys, overwritten
    assert sorted(await redis_client.keys("*")) == written
    assert (await FeatureStore(redis_client).posts(["1"]))["1"].author_key == "a"
    assert (await posts.state("1")).state == "ingested"  # type: ignore[union-attr]
    assert await index_ops(redis_client) == [("upsert", "1")] * 2
    # deleted posts stay deleted
    assert commit_ingested(r, rec("2", "a", unit(1)))
    assert await posts.delete("2")
    assert not commit_ingested(r, rec("2", "a", unit(1)))
    assert await redis_client.exists(keys.post("2")) == 0
    assert (await posts.state("2")).state == "deleted"  # type: ignore[union-attr]
    assert (await index_ops(redis_client))[-2:] == [("upsert", "2"), ("delete", "2")]  # no upsert after it
    assert not await posts.delete("never")
    r.close()


async def index_ops(redis_client: Any) -> list[tuple[str, str]]:
    """(op, post) of every entry on the vector-index stream, oldest first."""
    entries = await redis_client.xrange(keys.INDEX_STREAM)
    return [(f[b"op"].decode(), f[b"post"].decode()) for _, f in entries]


class OverSocket:
    """An Edge shard written directly (as its owner does) and searched through the owner's
    socket (as the API processes do)."""

    def __init__(self, edge: EdgeVectorIndex, remote: RemoteVectorIndex) -> None:
        self._edge = edge
        self.nearest, self.nearest_cf, self.count = remote.nearest, remote.nearest_cf, remote.count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._edge, name)


@pytest.fixture(params=["edge", "edge-over-socket", "qdrant-client"])
async def index(request: Any, tmp_path: Path) -> Any:
    idx: Any
    if request.param == "qdrant-client":
        idx = ServerVectorIndex(":memory:", "posts", DIMS)
        yield idx
    elif request.param == "edge":
        idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
        yield idx
    else:
        idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
        remote = RemoteVectorIndex(tmp_path / "index.sock")
        async with serve_searches(idx, tmp_path / "index.sock"):
            yield OverSocket(idx, remote)
            await remote.close()
    await idx.close()


async def test_vector_index_contract(index: VectorIndex) -> None:
    await index.upsert([rec("x", "a", unit(1, 0)), rec("y", "b", unit(0.9, 0.1)), rec("z", "c", unit(0, 1))])
    hits = await index.nearest(text(1, 0), 2, exclude_authors=[])
    assert [h.post_key for h in hits] == ["x", "y"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    hits = await index.nearest(text(1, 0), 3, exclude_authors=["a"])
    assert [h.post_key for h in hits] == ["y", "z"]
    await index.delete(["y", "unknown"])
    assert await index.count() == 2
    await index.clear()
    assert await index.count() == 0 and await index.nearest(text(1, 0), 2, []) == []


async def test_vector_index_fuses_spaces_and_takes_posts_without_some_vectors(index: VectorIndex) -> None:
    dog = unit(1, 0, dim=512)
    await index.upsert(
        [
            rec("photo", "a", None, image=dog),  # an uncaptioned photo: image vector only
            rec("both", "b", unit(1, 0), image=unit(0.8, 0.2, dim=512)),
            rec("words", "c", unit(1, 0.05)),
            rec("car", "d", None, image=unit(0, 1, dim=512)),
            rec("empty", "e", None),  # no vector at all: stored, never a neighbour
        ]
    )
    assert await index.count() == 5
    only_image = await index.nearest([("image", dog)], 3, [])
    assert [h.post_key for h in only_image] == ["photo", "both", "car"]
    fused = [h.post_key for h in await index.nearest([("text", unit(1, 0)), ("image", dog)], 10, [])]
    assert fused[0] == "both"  # near in both spaces wins the fusion
    assert set(fused) == {"photo", "both", "words", "car"}
    excluded = [h.post_key for h in await index.nearest([("text", unit(1, 0)), ("image", dog)], 10, ["b"])]
    assert "both" not in excluded


async def test_vector_index_fuses_several_queries_in_one_space(index: VectorIndex) -> None:
    """A long-term and a short-term interest vector in the same space: both lists count."""
    await index.upsert(
        [rec(f"p{i}", f"a{i}", unit(1, 0.1 * i)) for i in range(4)]
        + [rec(f"q{i}", f"b{i}", unit(0.1 * i, 1)) for i in range(4)]
    )
    long_only = [h.post_key for h in await index.nearest(text(1, 0), 2, [])]
    assert long_only == ["p0", "p1"]
    fused = [h.post_key for h in await index.nearest([*text(1, 0), *text(0, 1)], 4, [])]
    assert set(fused) == {"p0", "p1", "q0", "q1"}


def factors(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


async def test_cf_factors_are_searched_by_dot_product_within_their_model_only(index: VectorIndex) -> None:
    await index.upsert([rec("a", "x", unit(1)), rec("b", "y", unit(1)), rec("c", "z", unit(1))])
    stored = await index.set_cf(
        {"a": factors(2, 0, 0, 0), "b": factors(0, 1, 0, 0), "ghost": factors(1, 1, 0, 0)}, version=1
    )
    assert stored == 2  # posts the index does not have are skipped
    hits = await index.nearest_cf(factors(1, 1, 0, 0), 1, 10, [])
    assert [h.post_key for h in hits] == ["a", "b"] and hits[0].score == pytest.approx(2.0)  # dot, not cosine
    assert [h.post_key for h in await index.nearest_cf(factors(1, 1, 0, 0), 1, 10, ["x"])] == ["b"]
    assert await index.nearest_cf(factors(1, 0, 0, 0), 2, 10, []) == []  # no post has model 2 yet
    await index.set_cf({"b": factors(0, 1, 0, 0)}, version=2)
    assert [h.post_key for h in await index.nearest_cf(factors(1, 1, 0, 0), 2, 10, [])] == ["b"]
    assert await index.set_cf({}, version=3) == 0


async def test_edge_shard_survives_reopen(tmp_path: Path) -> None:
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
    await idx.upsert([rec("x", "a", unit(1))])
    await idx.close()
    again = EdgeVectorIndex(tmp_path / "shard", DIMS)
    assert [h.post_key for h in await again.nearest(text(1), 5, [])] == ["x"]
    await again.close()


async def test_edge_shard_quantises_new_points_in_batches_and_ranks_as_exact_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((250, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS, optimize_every=100)
    for start in range(0, 250, 50):
        await idx.upsert([rec(f"p{i}", "a", vectors[i]) for i in range(start, start + 50)])
    info = idx._shard.info()  # the shard's own account of what it quantised
    assert info.points_count == 250 and info.indexed_vectors_count == 200  # the last 50 wait for more
    query = vectors[0] + 0.5 * vectors[1]
    exact = [f"p{i}" for i in np.argsort(-(vectors @ query))[:10]]
    assert [h.post_key for h in await idx.nearest([("text", query)], 10, [])] == exact  # rescored
    await idx.close()
    again = EdgeVectorIndex(tmp_path / "shard", DIMS, optimize_every=100)
    assert again._shard.info().indexed_vectors_count == 250  # quantised on opening
    await again.close()


async def test_a_shard_with_an_old_layout_is_set_aside_and_rebuilt_from_the_records(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    old = EdgeVectorIndex(tmp_path / "shard", {"text": 384})  # an earlier version: text vectors only
    assert await old.prepare()
    await old.upsert([rec("stale", "a", unit(1))])
    await old.close()
    r = redis.Redis.from_url(settings.redis_url)
    for i in range(5):
        commit_ingested(r, rec(f"p{i}", "a", unit(1, i), image=unit(i, 1, dim=512)))
    r.close()
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
    assert await idx.prepare()  # starts empty
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("shard.incompatible-")]
    assert await IndexSync(redis_client, idx).rebuild(batch=2) == 5
    assert await idx.count() == 5
    assert {h.post_key for h in await idx.nearest([("image", unit(0, 1, dim=512))], 10, [])} == {
        f"p{i}" for i in range(5)
    }
    await idx.close()
    again = EdgeVectorIndex(tmp_path / "shard", DIMS)
    assert not await again.prepare()  # reopened as it is
    await again.close()


async def test_index_sync_applies_upserts_and_deletes_and_recovers_pending(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for key in ("1", "2", "3"):
        commit_ingested(r, rec(key, "a", unit(1, int(key))))
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
    # a crashed owner: entries read but never acknowledged
    await IndexSync(redis_client, idx).ensure_group()
    await redis_client.xreadgroup(keys.INDEX_GROUP, "api", {keys.INDEX_STREAM: ">"}, count=2)
    await PostStore(redis_client).delete("3")
    sync = IndexSync(redis_client, idx)
    assert await sync.catch_up() == 4
    assert sorted(h.post_key for h in await idx.nearest(text(1), 10, [])) == ["1", "2"]
    assert (await redis_client.xpending(keys.INDEX_STREAM, keys.INDEX_GROUP))["pending"] == 0
    await idx.close()
    r.close()


async def test_index_sync_waits_for_a_vector_index_down_at_start_then_builds_it_from_the_records(
    settings: Any, redis_client: Any
) -> None:
    commit_text_posts(settings, "1", "2")
    idx = ServerVectorIndex(":memory:", "posts", DIMS)
    create = idx.prepare
    down = [ConnectionError("refused")]

    async def prepare() -> bool:
        if down:
            raise down.pop()
        return await create()

    idx.prepare = prepare  # type: ignore[method-assign]
    sync = IndexSync(redis_client, idx)
    await sync.start()  # retried until the index answers, then rebuilt: it was created empty
    assert not down and await idx.count() == 2
    await idx.close()


async def test_trimming_drops_only_what_every_group_acknowledged(redis_client: Any) -> None:
    from feed.stores.streams import trim_consumed

    assert await trim_consumed(redis_client, "s") == 0  # no stream
    ids = [await redis_client.xadd("s", {"n": i}) for i in range(10)]
    assert await trim_consumed(redis_client, "s") == 0  # no group: nobody said what they consumed
    for group in ("a", "b", "idle"):
        await redis_client.xgroup_create("s", group, id="0")
    assert await trim_consumed(redis_client, "s") == 0  # `idle` read nothing yet
    await redis_client.xgroup_destroy("s", "idle")
    await redis_client.xreadgroup("a", "c", {"s": ">"})
    await redis_client.xack("s", "a", *ids)
    await redis_client.xreadgroup("b", "c", {"s": ">"}, count=6)
    await redis_client.xack("s", "b", *ids[:3])  # b still holds ids[3:6]
    assert await trim_consumed(redis_client, "s") == 3
    assert [eid for eid, _ in await redis_client.xrange("s")] == ids[3:]
    await redis_client.xreadgroup("b", "c", {"s": ">"})
    await redis_client.xack("s", "b", *ids[3:])
    assert await trim_consumed(redis_client, "s") == 6
    assert [eid for eid, _ in await redis_client.xrange("s")] == ids[9:]  # the last read stays


async def test_a_group_idle_too_long_is_dropped_so_the_stream_can_be_trimmed(redis_client: Any) -> None:
    import asyncio

    from feed.stores.streams import trim_consumed

    ids = [await redis_client.xadd("s", {"n": i}) for i in range(4)]
    for group in ("live", "gone", "unread"):
        await redis_client.xgroup_create("s", group, id="0")
    await redis_client.xreadgroup("gone", "c", {"s": ">"}, count=1)  # read one, then never again
    await asyncio.sleep(0.3)
    await redis_client.xreadgroup("live", "c", {"s": ">"})
    await redis_client.xack("s", "live", *ids)
    await redis_client.xgroup_destroy("s", "unread")  # (a group nobody read from is never dropped)
    assert await trim_consumed(redis_client, "s", drop_idle_s=10.0) == 0  # `gone` holds ids[0]
    assert await trim_consumed(redis_client, "s", drop_idle_s=0.2) == 3
    assert [g["name"] for g in await redis_client.xinfo_groups("s")] == [b"live"]


async def test_a_shard_whose_group_was_dropped_is_rebuilt_from_the_records(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    commit_ingested(r, rec("1", "a", unit(1, 1)))
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
    sync = IndexSync(redis_client, idx)
    await sync.start()
    assert await sync.catch_up() == 0 and await idx.count() == 1  # a first start builds from the records
    await idx.close()
    # while the replica is away its group is dropped and the stream trimmed past what it missed
    await redis_client.xgroup_destroy(keys.INDEX_STREAM, keys.INDEX_GROUP)
    commit_ingested(r, rec("2", "a", unit(1, 2)))
    await PostStore(redis_client).delete("1")
    await redis_client.xtrim(keys.INDEX_STREAM, maxlen=0)
    r.close()
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
    assert not await idx.prepare()  # the shard is reopened as it was
    sync = IndexSync(redis_client, idx)
    await sync.start()
    await sync.catch_up()
    assert sorted(h.post_key for h in await idx.nearest(text(1), 10, [])) == ["2"]
    await idx.close()


async def test_index_sync_trims_the_operations_every_group_applied(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    commit_text_posts(settings, "1", "2", "3")
    idx = EdgeVectorIndex(tmp_path / "shard", DIMS)
    sync = IndexSync(redis_client, idx, trim_every_s=0.05)
    try:
        async with sync.running():  # cancels until done: redis-py may swallow one cancel
            await wait_for(lambda: _has(idx, 3))
            await wait_for(lambda: _stream_length(redis_client, 1))
    finally:
        await idx.close()


def commit_text_posts(settings: Any, *post_keys: str) -> None:
    """Commit text posts by author `a` whose keys are digits (their vectors differ by it)."""
    r = redis.Redis.from_url(settings.redis_url)
    for key in post_keys:
        commit_ingested(r, rec(key, "a", unit(1, int(key))))
    r.close()


async def _stream_length(redis_client: Any, n: int) -> bool:
    return int(await redis_client.xlen(keys.INDEX_STREAM)) == n


def test_api_processes_claim_the_lowest_free_replica_slot(tmp_path: Path) -> None:
    first, second = claim_replica(tmp_path), claim_replica(tmp_path)
    assert (first.index, second.index) == (0, 1)
    first.release()  # as when its process ends
    again = claim_replica(tmp_path)
    assert again.index == 0
    again.release()
    second.release()


async def test_each_shard_follows_the_stream_in_its_own_group_and_a_new_one_starts_from_the_records(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for key in ("1", "2", "3"):
        commit_ingested(r, rec(key, "a", unit(1, int(key))))
    old, new = EdgeVectorIndex(tmp_path / "qdrant", DIMS), EdgeVectorIndex(tmp_path / "qdrant-1", DIMS)
    old_sync = IndexSync(redis_client, old)
    new_sync = IndexSync(redis_client, new, group=f"{keys.INDEX_GROUP}-1")
    assert await old_sync.catch_up() == 3
    # a shard added later (another host's owner) rebuilds from the records, then reads only what comes after
    await new_sync.skip_to_tip()
    assert await new_sync.rebuild() == 3
    commit_ingested(r, rec("4", "a", unit(1, 4)))
    await PostStore(redis_client).delete("1")
    assert await old_sync.catch_up() == 2 and await new_sync.catch_up() == 2
    for index in (old, new):
        assert sorted(h.post_key for h in await index.nearest(text(1), 10, [])) == ["2", "3", "4"]
        await index.close()
    r.close()


async def test_index_sync_takes_over_what_a_dead_consumer_left_pending(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for key in ("1", "2"):
        commit_ingested(r, rec(key, "a", unit(1, int(key))))
    index = EdgeVectorIndex(tmp_path / "shard", DIMS)
    await IndexSync(redis_client, index, consumer="api-gone-0").ensure_group()
    await redis_client.xreadgroup(keys.INDEX_GROUP, "api-gone-0", {keys.INDEX_STREAM: ">"})  # then died
    alive = IndexSync(redis_client, index, consumer="api-host-1", reclaim_idle_ms=0)
    assert await alive.catch_up() == 0  # its own group position is past them
    assert await alive.reclaim() == 2
    assert await alive.catch_up() == 2
    assert sorted(h.post_key for h in await index.nearest(text(1), 10, [])) == ["1", "2"]
    assert (await redis_client.xpending(keys.INDEX_STREAM, keys.INDEX_GROUP))["pending"] == 0
    await index.close()
    r.close()


async def test_index_sync_recreates_its_group_when_redis_lost_it(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    """A Redis restarted without persistence has no consumer group: the sync makes it again."""
    index = EdgeVectorIndex(tmp_path / "shard", DIMS)
    sync = IndexSync(redis_client, index)
    r = redis.Redis.from_url(settings.redis_url)
    async with sync.running():
        commit_ingested(r, rec("1", "a", unit(1, 1)))
        await wait_for(lambda: index.count(), 10)
        await redis_client.xgroup_destroy(keys.INDEX_STREAM, keys.INDEX_GROUP)
        commit_ingested(r, rec("2", "a", unit(1, 2)))
        await wait_for(lambda: _has(index, 2), 15)
    await index.close()
    r.close()


async def _has(index: EdgeVectorIndex, n: int) -> bool:
    return await index.count() == n


def test_a_lost_connection_is_one_line_and_anything_else_a_traceback() -> None:
    import structlog
    from qdrant_client.http.exceptions import ResponseHandlingException

    from feed.logging import log_failure

    log = structlog.get_logger("test")
    gone = redis.exceptions.ConnectionError("gone")
    refused = ResponseHandlingException(httpx.ConnectError("refused"))
    refused.__cause__ = refused.source
    slow = redis.exceptions.TimeoutError("slow")
    with structlog.testing.capture_logs() as logs:
        log_failure(log, "sync_failed", gone)
        log_failure(log, "sync_failed", refused)  # a Qdrant server that does not answer
        log_failure(log, "sync_failed", slow)  # known by its name: feed.logging imports no redis
        try:
            raise ValueError("bug")
        except ValueError as exc:
            log_failure(log, "sync_failed", exc)
    assert logs[0] == {"event": "sync_failed", "error": repr(gone), "log_level": "warning"}
    assert logs[1] == {"event": "sync_failed", "error": repr(refused), "log_level": "warning"}
    assert logs[2] == {"event": "sync_failed", "error": repr(slow), "log_level": "warning"}
    assert logs[3]["log_level"] == "error" and logs[3]["exc_info"] is True


async def test_feature_store_reads(settings: Any, redis_client: Any) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    commit_ingested(r, rec("new", "a", unit(1)))
    commit_ingested(r, rec("b1", "b", unit(1)))
    store = FeatureStore(redis_client)
    posts = await store.posts(["new", "missing"])
    assert list(posts) == ["new"] and posts["new"].author_id == "a"
    await store.record_impressions(["new", "new", "b1"])
    assert await redis_client.zmscore(keys.IMPRESSIONS, ["new", "b1", "never"]) == [2.0, 1.0, None]
    ((_, change),) = await redis_client.xrange(keys.CHANGES_STREAM)  # for every API's catalogue
    assert unpack_keys(change[b"impressions"]) == ["b1", "new"]
    r.close()


def test_stream_messages_read_back_what_they_wrote() -> None:
    from feed.stores.messages import CatalogChange, IndexOp, LoggedInteraction

    def as_read(fields: dict[Any, Any]) -> dict[bytes, bytes]:  # what redis-py returns
        return {str(k).encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}

    for op in (IndexOp.upsert("p1"), IndexOp.delete("p1"), IndexOp.cf(42)):
        assert IndexOp.of(as_read(op.fields())) == op
    assert IndexOp.of({b"op": b"upsert", b"post": b"p2"}) == IndexOp.upsert(
        "p2"
    )  # entries of earlier releases
    with pytest.raises(ValueError, match="unknown index operation"):
        IndexOp.of({b"op": b"rename", b"post": b"p2"})
    change = CatalogChange(posts=["p1", "p2"], authors=["a1"])
    assert set(change.fields()) == {"posts", "authors"}  # empty lists are left out
    assert CatalogChange.of(as_read(change.fields())) == change
    logged = {b"user": b"u1", b"post": b"p1", b"action": b"like", b"ts": b"12.5"}
    assert LoggedInteraction.of(logged) == LoggedInteraction("u1", "p1", "like", 12.5)
