"""The index owner's off-path builds: a copy optimised in a child process is swapped in with
what the stream brought meanwhile, the old generation goes, and a shard from before
generations (or an interrupted build's folder) is taken care of on opening."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import redis

from feed.stores import keys
from feed.stores.index.builds import BUILD_GROUP, ShardGenerations, live_folder
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.sync import IndexSync
from feed.stores.post_store import commit_ingested
from tests.helpers import unit, wait_for
from tests.test_stores import DIMS, rec, text


def commit(r: redis.Redis, first: int, last: int) -> None:
    for i in range(first, last):
        commit_ingested(r, rec(f"p{i}", "a", unit(1, i / 100)))


async def found(index: ShardGenerations, n: int) -> bool:
    return await index.count() == n and len(await index.nearest(text(1), n + 10, [])) == n


async def test_a_copy_is_optimised_aside_and_swapped_in_with_what_came_meanwhile(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    root = tmp_path / "qdrant"
    index = ShardGenerations(root, DIMS, every=40)
    sync = IndexSync(redis_client, index, between_batches=partial(index.step, redis_client))
    async with sync.running():
        commit(r, 0, 50)
        await wait_for(lambda: index._child is not None, 20)  # the build started on 50 waiting posts
        assert index.live.unoptimized == 50
        commit(r, 50, 60)  # while the child optimises the copy: applied to the live shard
        await wait_for(partial(found, index, 60), 20)
        await wait_for(lambda: index.builds == 1, 60)
        assert index.live.path == root / "gen-1" == live_folder(root)
        assert not (root / "gen-0").exists()
        assert await found(index, 60)  # the ten that came during the build were replayed into it
        assert index.live.unoptimized == 10  # they wait in the new generation's unindexed segment
        groups = {g["name"].decode() for g in await redis_client.xinfo_groups(keys.INDEX_STREAM)}
        assert groups == {keys.INDEX_GROUP}
    await index.close()
    reopened = ShardGenerations(root, DIMS, every=40)
    assert reopened.live.path == root / "gen-1" and await found(reopened, 60)
    await reopened.close()
    r.close()


async def test_opening_adopts_a_shard_from_before_generations_and_drops_a_stray_build(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    old = EdgeVectorIndex(root, DIMS)  # the layout of earlier versions: the shard in the folder itself
    await old.upsert([rec("x", "a", unit(1))])
    await old.close()
    index = ShardGenerations(root, DIMS)
    assert index.live.path == root / "gen-0"
    assert [h.post_key for h in await index.nearest(text(1), 5, [])] == ["x"]
    await index.close()
    (root / "gen-1").mkdir()  # a build the owner did not finish
    index = ShardGenerations(root, DIMS)
    assert not (root / "gen-1").exists() and await index.count() == 1
    await index.close()


async def test_the_owner_group_must_have_nothing_pending_before_a_build_starts(
    settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    index = ShardGenerations(tmp_path / "qdrant", DIMS, every=1)
    sync = IndexSync(redis_client, index)
    await sync.ensure_group()
    commit(r, 0, 2)
    await redis_client.xreadgroup(keys.INDEX_GROUP, "gone", {keys.INDEX_STREAM: ">"}, count=1)  # then died
    await sync.apply_once(block_ms=None)  # the second entry
    await index.step(redis_client)
    assert index._child is None  # the first entry is pending: a copy now would miss it
    groups = {g["name"].decode() for g in await redis_client.xinfo_groups(keys.INDEX_STREAM)}
    assert BUILD_GROUP not in groups
    await index.close()
    r.close()
