"""The index owner's shard, optimised off the search path.

Sealing new points into HNSW-indexed segments (`optimize()`) holds the GIL for seconds,
and a search waits behind it. So the owner never optimises the shard it searches
(`ShardGenerations` opens it with `optimize_every=0`: new points stay in the exactly-scanned
segment, searchable at once). Once `every` new points wait there, `step()`, run by the
index sync between two batches:
1. marks the stream position: a consumer group `indexer-build` at the owner group's last
   delivered entry (every delivered entry is applied by then; with entries still pending,
   the build waits), which also keeps the entries after it from being trimmed;
2. flushes the live shard and copies its folder to the next generation
   (`<root>/gen-<n+1>`) in a thread: searches go on, the stream waits for the copy;
3. starts a child process (`python -m feed.stores.index.builds <folder> <dims>`, at a lower
   CPU priority than serving) that opens the copy and optimises it, while the owner goes on
   applying the stream to the live shard and answering searches;
4. once the child is done: opens the copy, applies to it what the stream brought since the
   mark (through `indexer-build`; index operations are idempotent, so entries that reach it
   again through the owner's group do no harm), swaps it in, writes `<root>/current`, and
   closes and deletes the old generation.
A failed build is logged, cleaned up, and tried again at the next step. On opening, folders
and the group an interrupted build left are removed; a shard left directly in `<root>` (by a
version without generations) becomes generation 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import structlog
from redis.asyncio import Redis

from feed.replica import end_with_parent
from feed.stores import keys
from feed.stores.index.edge import EdgeVectorIndex
from feed.stores.index.sync import IndexSync
from feed.stores.index.vectors import Queries, VectorHit
from feed.stores.records import PostRecord

log = structlog.get_logger(__name__)

BUILD_GROUP = f"{keys.INDEX_GROUP}-build"


def live_folder(root: Path) -> Path:
    """The folder of the generation `<root>/current` names (generation 0 if none)."""
    current = root / "current"
    return root / (current.read_text().strip() if current.exists() else "gen-0")


class ShardGenerations:
    """A `VectorIndex` over the live generation of an Edge shard under `root`, replaced by an
    optimised copy built in a child process (see the module docstring)."""

    def __init__(self, root: Path, dims: dict[str, int], every: int = 20_000) -> None:
        if (root / "edge_config.json").exists():  # a shard from before generations
            moved = root.with_name(f"{root.name}.moving")
            root.rename(moved)
            root.mkdir()
            moved.rename(root / "gen-0")
        root.mkdir(parents=True, exist_ok=True)
        self.dims = dims
        self._root = root
        self._every = every
        self.live = EdgeVectorIndex(live_folder(root), dims, optimize_every=0)
        for stray in root.glob("gen-*"):
            if stray != self.live.path:
                shutil.rmtree(stray)
        self._child: asyncio.subprocess.Process | None = None
        self._next: Path | None = None
        self._started = 0.0
        self.builds = 0  # generations swapped in since opening

    # -- the VectorIndex interface, answered by the live generation -----------------

    async def prepare(self) -> bool:
        return await self.live.prepare()

    async def upsert(self, records: list[PostRecord]) -> None:
        await self.live.upsert(records)

    async def delete(self, post_keys: list[str]) -> None:
        await self.live.delete(post_keys)

    async def clear(self) -> None:
        await self.live.clear()

    async def set_cf(self, factors: dict[str, np.ndarray], version: int) -> int:
        return await self.live.set_cf(factors, version)

    async def nearest(self, queries: Queries, limit: int, exclude_authors: list[str]) -> list[VectorHit]:
        return await self.live.nearest(queries, limit, exclude_authors)

    async def nearest_cf(
        self, user: np.ndarray, version: int, limit: int, exclude_authors: list[str]
    ) -> list[VectorHit]:
        return await self.live.nearest_cf(user, version, limit, exclude_authors)

    async def count(self) -> int:
        return await self.live.count()

    async def close(self) -> None:
        if self._child is not None and self._child.returncode is None:
            self._child.kill()
            await self._child.wait()
        await self.live.close()

    # -- builds ------------------------------------------------------------------------

    async def step(self, redis: Redis) -> None:
        """Swap in a finished build, or start one when enough points wait (module docstring)."""
        if self._child is not None:
            if self._child.returncode is not None:
                await self._finish(redis)
        elif self.live.unoptimized >= self._every:
            await self._start(redis)

    async def _start(self, redis: Redis) -> None:
        groups = {g["name"].decode(): g for g in await redis.xinfo_groups(keys.INDEX_STREAM)}
        owner = groups.get(keys.INDEX_GROUP)
        if owner is None or owner["pending"]:
            return  # entries delivered but not applied yet: the copy would miss them
        if BUILD_GROUP in groups:
            await redis.xgroup_destroy(keys.INDEX_STREAM, BUILD_GROUP)
        await redis.xgroup_create(keys.INDEX_STREAM, BUILD_GROUP, id=owner["last-delivered-id"])
        generation = int(self.live.path.name.removeprefix("gen-")) + 1
        self._next = self._root / f"gen-{generation}"
        shutil.rmtree(self._next, ignore_errors=True)
        self.live.flush()
        self._started = time.perf_counter()
        await asyncio.to_thread(shutil.copytree, self.live.path, self._next)
        copied = time.perf_counter() - self._started
        self._child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(self._next),
            json.dumps(self.dims),
            preexec_fn=_build_child,
        )
        log.info("vector_index_build_started", generation=generation, copy_s=round(copied, 2))

    async def _finish(self, redis: Redis) -> None:
        assert self._child is not None and self._next is not None
        code, self._child = self._child.returncode, None
        folder, self._next = self._next, None
        if code != 0:
            log.error("vector_index_build_failed", folder=str(folder), exit_code=code)
            shutil.rmtree(folder, ignore_errors=True)
            await redis.xgroup_destroy(keys.INDEX_STREAM, BUILD_GROUP)
            return
        built = time.perf_counter() - self._started
        fresh = EdgeVectorIndex(folder, self.dims, optimize_every=0)
        try:
            replayed = await IndexSync(redis, fresh, BUILD_GROUP, "build").catch_up()
        except BaseException:
            await fresh.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        await redis.xgroup_destroy(keys.INDEX_STREAM, BUILD_GROUP)
        old, self.live = self.live, fresh
        (self._root / "current.new").write_text(folder.name)
        (self._root / "current.new").replace(self._root / "current")
        await old.close()
        shutil.rmtree(old.path, ignore_errors=True)
        self.builds += 1
        log.info(
            "vector_index_build_swapped_in",
            generation=folder.name,
            build_s=round(built, 2),
            replayed=replayed,
            waiting=fresh.unoptimized,
        )


def _build_child() -> None:
    end_with_parent()
    os.nice(10)  # serving first: the build takes the cores the API processes leave


def main() -> None:
    """Build-child entry point: open the shard folder `argv[1]` (vector sizes `argv[2]`, JSON),
    optimise it, close it."""
    folder, dims = Path(sys.argv[1]), json.loads(sys.argv[2])
    asyncio.run(EdgeVectorIndex(folder, dims, optimize_every=1).close())


if __name__ == "__main__":
    main()
