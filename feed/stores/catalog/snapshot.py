"""The post catalogue on disk: what an API process loads at start instead of reading every
post from Redis, and whose vectors the API processes of a host share.

A snapshot is a folder `<root>/snap-<time>/` of `.npy` files, one per embedding space (its
rows beyond the posts are spare, a sparse hole read as zeros) and one per other column,
and `meta.msgpack` (keys, host ids, authors, trending bases, the CF model's version, and
the stream positions it was taken at); `<root>/current` names the newest complete one.
Loading maps the vector files copy-on-write: their pages are the kernel's page cache, one
copy per host however many API processes map them, and a process that writes a row (a new
post in a spare row, a re-ingested one) copies only that page. Past the spare rows a
matrix grows into the process's own memory, as without a snapshot.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgspec
import numpy as np

from feed.stores.catalog.model import CatalogState, PostCatalog
from feed.stores.trending import TrendingBase

SPARE_SHARE = 0.25  # spare rows for new posts, as a share of the posts (at least MIN_SPARE)
MIN_SPARE = 10_000
CHUNK = 65_536  # rows copied at a time into a vector file
LAYOUT = 1  # what the files hold; a snapshot of another layout is not loaded. 1: int8 vectors, scales


class SnapshotMeta(msgspec.Struct, frozen=True):
    """Everything of a snapshot but its numpy columns."""

    keys: list[str]
    post_ids: list[int | str]
    author_keys: list[str]
    author_ids: list[int | str]
    trending_base: tuple[float, float] | None
    horizon_bases: list[tuple[float, float] | None]
    cf_version: int
    index_position: str  # the last index-stream entry the catalogue had applied
    changes_position: str  # the same for the changes stream
    changes_read: int  # entries of the changes stream up to and including that one
    layout: int = 0  # LAYOUT of the release that wrote it (0: before layouts were numbered)


def _base(pair: tuple[float, float] | None) -> TrendingBase | None:
    return None if pair is None else TrendingBase(*pair)


def _pair(base: TrendingBase | None) -> tuple[float, float] | None:
    return None if base is None else (base.base, base.half_life_s)


def prepare(
    catalog: PostCatalog, index_position: str, changes_position: str, changes_read: int
) -> tuple[CatalogState, SnapshotMeta]:
    """What `write` writes, taken while the catalogue stands still: its columns copied, its
    vectors as views (the file is written from them while the catalogue goes on changing: a
    row changed meanwhile comes again from the streams after the positions given, which are
    those of this moment)."""
    state = catalog.export()
    state.columns = {name: column.copy() for name, column in state.columns.items()}
    meta = SnapshotMeta(
        state.keys,
        state.post_ids,
        state.author_keys,
        state.author_ids,
        _pair(state.trending_base),
        [_pair(b) for b in state.horizon_bases],
        state.cf_version,
        index_position,
        changes_position,
        changes_read,
        LAYOUT,
    )
    return state, meta


def write(state: CatalogState, meta: SnapshotMeta, root: Path) -> Path:
    """Write a prepared snapshot under `root` and make it current; returns its folder (older
    ones are deleted)."""
    folder = root / f"snap-{time.time_ns()}"
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True)
    n = len(state.keys)
    rows = n + max(MIN_SPARE, int(n * SPARE_SHARE))
    for space, vectors in state.vectors.items():
        shape = (rows, vectors.shape[1])
        out = np.lib.format.open_memmap(partial / f"vectors.{space}.npy", "w+", vectors.dtype, shape)
        for start in range(0, n, CHUNK):
            end = min(n, start + CHUNK)
            out[start:end] = vectors[start:end]
        out.flush()
        del out
    for name, column in state.columns.items():
        np.save(partial / f"column.{name}.npy", column)
    (partial / "meta.msgpack").write_bytes(msgspec.msgpack.encode(meta))
    partial.rename(folder)
    (root / "current.new").write_text(folder.name)
    (root / "current.new").replace(root / "current")
    for old in root.glob("snap-*"):
        if old != folder:  # processes that mapped it keep their mapping until they end
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load(root: Path) -> tuple[CatalogState, SnapshotMeta] | None:
    """The current snapshot under `root` (vectors mapped copy-on-write), or None if there is none
    (or it was written in another LAYOUT)."""
    current = root / "current"
    if not current.exists():
        return None
    folder = root / current.read_text().strip()
    meta = msgspec.msgpack.decode((folder / "meta.msgpack").read_bytes(), type=SnapshotMeta)
    if meta.layout != LAYOUT:  # written by another release: the catalogue loads from Redis instead
        return None
    vectors = {
        path.name.removeprefix("vectors.").removesuffix(".npy"): np.load(path, mmap_mode="c")
        for path in folder.glob("vectors.*.npy")
    }
    columns = {
        path.name.removeprefix("column.").removesuffix(".npy"): np.load(path)
        for path in folder.glob("column.*.npy")
    }
    state = CatalogState(
        keys=meta.keys,
        post_ids=meta.post_ids,
        author_keys=meta.author_keys,
        author_ids=meta.author_ids,
        columns=columns,
        vectors=vectors,
        trending_base=_base(meta.trending_base),
        horizon_bases=[_base(b) for b in meta.horizon_bases],
        cf_version=meta.cf_version,
    )
    return state, meta
