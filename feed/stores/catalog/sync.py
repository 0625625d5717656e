"""Loads the post catalogue from Redis and keeps it in step with every writer.

Writers append what they changed to two streams, in the same transaction as the change:
the ingest worker and post deletion to the index stream (`upsert` / `delete` / `cf`
operations, which the vector index owner also consumes, in its group), the event consumer
and the impression side effect to the changes stream (the keys of posts and authors whose
counters moved). Every API process reads both streams from where its snapshot began (plain
XREAD, no group: each process needs every entry) and, once per batch of entries, reads the
current values of what they name in one round trip. Values are read, not added, so an
entry applied twice (the snapshot and the stream overlap) does no harm. A reader that fell
behind the changes stream's trimming reloads everything.

With a snapshot folder, `load` starts from the newest snapshot (`snapshot.py`) when the
streams still hold everything after it, and then reads only what came since; the process
told to write them (one per host) writes one after a load from Redis and then every
`snapshot_every_s` while the index stream moves on. The index stream keeps the entries after the
newest snapshot's position: a mark (`streams.set_mark`, one per host) holds it against
trimming.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from feed.aio import forever, running
from feed.stores import keys
from feed.stores.catalog import snapshot
from feed.stores.catalog.model import PostCatalog
from feed.stores.feature_store import FeatureStore
from feed.stores.messages import CatalogChange, IndexOp
from feed.stores.records import vector_from_bytes
from feed.stores.streams import mark, set_mark
from feed.stores.trending import TrendingBase

log = structlog.get_logger(__name__)


def _stored_base(raw: dict[bytes, bytes]) -> TrendingBase | None:
    return TrendingBase(float(raw[b"base"]), float(raw[b"half_life_s"])) if raw else None


def _rebased(held: TrendingBase | None, stored: TrendingBase | None) -> bool:
    """Whether every stored score changed under the catalogue (a rebase or a restart)."""
    return held is not None and stored != held


class CatalogSync:
    """Fills a `PostCatalog` from Redis (or a snapshot in `snapshots`) and follows the streams;
    `writes_snapshots` makes it write them there."""

    def __init__(
        self,
        redis: Redis,
        catalog: PostCatalog,
        batch: int = 2000,
        snapshots: Path | None = None,
        writes_snapshots: bool = False,
        snapshot_every_s: float = 600.0,
        host: str = "",
    ) -> None:
        self._redis = redis
        self._catalog = catalog
        self._horizon_keys = [keys.trending_horizon(h) for h in catalog.horizons_s]
        self._horizon_meta_keys = [keys.trending_horizon_meta(h) for h in catalog.horizons_s]
        self._features = FeatureStore(redis)
        self._batch = batch
        self._positions: dict[str, str] = {}
        self._changes_read = 0  # entries of the changes stream up to and including our position
        self._snapshots = snapshots
        self._writes_snapshots = writes_snapshots and snapshots is not None
        self._snapshot_every_s = snapshot_every_s
        self._mark = f"catalog-snapshot-{host}"  # where this host's newest snapshot was taken
        self._snapshot_position = ""  # the index-stream position of the last snapshot taken
        self._applying = asyncio.Lock()  # a snapshot is taken between two polls, not within one

    async def _stream_tip(self, stream: str) -> tuple[str, int]:
        """The stream's last id and how many entries were ever added to it (0-0, 0 if none)."""
        try:
            info: Any = await self._redis.xinfo_stream(stream)
        except ResponseError:  # no such stream yet
            return "0-0", 0
        return _as_str(info["last-generated-id"]), int(info["entries-added"])

    async def load(self) -> int:
        """Fill the catalogue from the newest usable snapshot, else read every post and feature
        from Redis; returns the number of posts."""
        start = time.perf_counter()
        found = snapshot.load(self._snapshots) if self._snapshots is not None else None
        if found is not None and await self._usable(found[1]):
            state, meta = found
            self._catalog.restore(state)
            self._positions = {
                keys.INDEX_STREAM: meta.index_position,
                keys.CHANGES_STREAM: meta.changes_position,
            }
            self._changes_read = meta.changes_read
            self._snapshot_position = meta.index_position
            if await self._trimmed_past():  # counters changed beyond what the stream still says
                await self._reload()
            seconds = round(time.perf_counter() - start, 2)
            log.info(
                "catalog_loaded", posts=len(self._catalog), snapshot=meta.index_position, seconds=seconds
            )
            return len(self._catalog)
        index_tip, _ = await self._stream_tip(keys.INDEX_STREAM)
        changes_tip, self._changes_read = await self._stream_tip(keys.CHANGES_STREAM)
        self._positions = {keys.INDEX_STREAM: index_tip, keys.CHANGES_STREAM: changes_tip}
        async for records in self._features.all_posts(self._batch):
            self._catalog.upsert(records)
            await self._refresh([r.key for r in records], [], [], trending=False)
        await self._load_totals()
        await self._load_cf()
        log.info("catalog_loaded", posts=len(self._catalog), seconds=round(time.perf_counter() - start, 2))
        return len(self._catalog)

    async def _usable(self, meta: snapshot.SnapshotMeta) -> bool:
        """Whether the index stream still holds every entry after the snapshot's position (its
        mark is there)."""
        return await mark(self._redis, keys.INDEX_STREAM, self._mark) == meta.index_position

    async def save_snapshot(self) -> Path:
        """Write the catalogue as the newest snapshot (the index stream marked at its position
        first, so nothing after it is trimmed while it is written); returns its folder."""
        assert self._snapshots is not None
        async with self._applying:
            state, meta = snapshot.prepare(
                self._catalog,
                self._positions[keys.INDEX_STREAM],
                self._positions[keys.CHANGES_STREAM],
                self._changes_read,
            )
        await set_mark(self._redis, keys.INDEX_STREAM, self._mark, meta.index_position)
        folder = await asyncio.to_thread(snapshot.write, state, meta, self._snapshots)
        self._snapshot_position = meta.index_position
        log.info("catalog_snapshot_written", posts=len(meta.keys), folder=str(folder))
        return folder

    async def _snapshot_if_due(self) -> None:
        """A new snapshot once the index stream moved on (posts came or went, a CF model)."""
        if self._positions.get(keys.INDEX_STREAM) != self._snapshot_position:
            await self.save_snapshot()

    async def _load_totals(self) -> None:
        """Trending (every horizon's too), impressions and reach of everything (the zsets),
        replacing what was there."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(keys.TRENDING_META)
        pipe.zrange(keys.TRENDING, 0, -1, withscores=True)
        pipe.zrange(keys.IMPRESSIONS, 0, -1, withscores=True)
        pipe.zrange(keys.AUTHOR_REACH, 0, -1, withscores=True)
        for meta_key, key in zip(self._horizon_meta_keys, self._horizon_keys, strict=True):
            pipe.hgetall(meta_key)
            pipe.zrange(key, 0, -1, withscores=True)
        meta, trending, impressions, reach, *horizons = await pipe.execute()
        self._catalog.set_trending(_stored_base(meta), {m.decode(): s for m, s in trending}, reset=True)
        self._catalog.set_horizons(
            [_stored_base(m) for m in horizons[::2]],
            [{m.decode(): s for m, s in scores} for scores in horizons[1::2]],
            reset=True,
        )
        self._catalog.set_impressions({m.decode(): s for m, s in impressions})
        self._catalog.set_reach({m.decode(): s for m, s in reach})

    async def _load_cf(self) -> None:
        meta: list[Any] = await self._redis.hmget(keys.CF_META, ["version", "factors"])
        if meta[0] is None:
            return
        factors: dict[str, np.ndarray] = {}
        async for key, value in self._redis.hscan_iter(keys.CF_ITEMS, count=2000):
            factors[key.decode()] = vector_from_bytes(value)
        self._catalog.set_cf(int(meta[0]), factors, int(meta[1] or 0))

    async def _refresh(
        self, posts: list[str], impressions: list[str], authors: list[str], trending: bool = True
    ) -> None:
        """Read the current counters of these posts (counts, and trending at every horizon
        unless told not to), impressions and authors' reach into the catalogue."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.TRENDING_META)
        for meta_key in self._horizon_meta_keys:
            pipe.hgetall(meta_key)
        for key in posts:
            pipe.hgetall(keys.post_counts(key))
        for zset, members in (
            (keys.TRENDING, posts if trending else []),
            (keys.IMPRESSIONS, impressions),
            (keys.AUTHOR_REACH, authors),
        ):
            if members:
                pipe.zmscore(zset, members)
        horizon_keys = self._horizon_keys if posts and trending else []
        for key in horizon_keys:
            pipe.zmscore(key, posts)
        replies = iter(await pipe.execute())
        meta = next(replies)
        horizon_bases = [_stored_base(next(replies)) for _ in self._horizon_meta_keys]
        counts = [next(replies) for _ in posts]
        scores, served, reach = (
            next(replies) if members else [] for members in (posts if trending else [], impressions, authors)
        )
        horizon_scores = [next(replies) for _ in horizon_keys]
        catalog = self._catalog
        catalog.set_counts(
            {k: {a.decode(): float(n) for a, n in c.items()} for k, c in zip(posts, counts, strict=True)}
        )
        base = _stored_base(meta)
        if _rebased(catalog.trending_base, base) or any(map(_rebased, catalog.horizon_bases, horizon_bases)):
            await self._load_totals()  # rebased or restarted: every stored score changed
        elif posts and trending:
            catalog.set_trending(base, {k: s or 0.0 for k, s in zip(posts, scores, strict=True)})
            catalog.set_horizons(
                horizon_bases,
                [{k: s or 0.0 for k, s in zip(posts, column, strict=True)} for column in horizon_scores],
            )
        if impressions:
            catalog.set_impressions({k: s or 0.0 for k, s in zip(impressions, served, strict=True)})
        if authors:
            catalog.set_reach({k: s or 0.0 for k, s in zip(authors, reach, strict=True)})

    async def poll(self, block_ms: int | None = None) -> int:
        """Apply the next entries of both streams; returns how many there were."""
        async with self._applying:
            return await self._poll(block_ms)

    async def _poll(self, block_ms: int | None) -> int:
        streams: dict[Any, Any] = dict(self._positions)
        reply: Any = await self._redis.xread(streams, count=self._batch, block=block_ms)
        upserts: dict[str, bool] = {}  # post key -> upsert (True) or delete (False), last op wins
        posts: set[str] = set()
        impressions: set[str] = set()
        authors: set[str] = set()
        new_model = False
        entries = 0
        for raw_stream, rows in reply or []:
            stream = raw_stream.decode()
            if stream == keys.CHANGES_STREAM:
                if len(rows) == self._batch and await self._trimmed_past():
                    await self._reload()
                    return len(rows)
                self._changes_read += len(rows)
            for entry_id, fields in rows:
                entries += 1
                self._positions[stream] = entry_id.decode()
                if stream == keys.INDEX_STREAM:
                    op = IndexOp.of(fields)
                    if op.op == "cf":
                        new_model = True
                    else:
                        upserts[op.post] = op.op == "upsert"
                else:
                    change = CatalogChange.of(fields)
                    posts.update(change.posts)
                    impressions.update(change.impressions)
                    authors.update(change.authors)
        deleted = [k for k, up in upserts.items() if not up]
        self._catalog.remove(deleted)
        added = [k for k, up in upserts.items() if up]
        if added:
            records = await self._features.posts(added)
            self._catalog.remove(k for k in added if k not in records)
            self._catalog.upsert(records.values())
            posts.update(records)
            impressions.update(records)
        if posts or impressions or authors:
            await self._refresh(sorted(posts), sorted(impressions), sorted(authors))
        if new_model:
            await self._load_cf()
        return entries

    async def _trimmed_past(self) -> bool:
        """Whether the changes stream dropped entries this reader has not read (more entries
        were trimmed from its head than this reader has read)."""
        try:
            info: Any = await self._redis.xinfo_stream(keys.CHANGES_STREAM)
        except ResponseError:  # no such stream: nothing was written to it yet
            return False
        return int(info["entries-added"]) - int(info["length"]) > self._changes_read

    async def _reload(self) -> None:
        log.warning("catalog_fell_behind_reloading")
        tip, self._changes_read = await self._stream_tip(keys.CHANGES_STREAM)
        self._positions[keys.CHANGES_STREAM] = tip
        catalog = self._catalog
        await self._refresh(list(catalog.rows), list(catalog.rows), list(catalog.author_codes))
        await self._load_totals()

    async def run(self, block_ms: int = 100) -> None:
        """Follow the streams until cancelled; a failing poll is logged and retried."""
        await forever(partial(self.poll, block_ms), log, "catalog_sync_failed")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run `run()` as a background task for the duration of the context, and, when this
        process writes snapshots, a second one that writes them (the first right away when
        the catalogue was not loaded from one)."""
        async with running(self.run(), "catalog-sync"):
            if not self._writes_snapshots:
                yield
                return
            snapshots = forever(
                self._snapshot_if_due,
                log,
                "catalog_snapshot_failed",
                every_s=self._snapshot_every_s,
                retry_s=60.0,
            )
            async with running(snapshots, "catalog-snapshots"):
                yield


def _as_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
