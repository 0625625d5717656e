"""The post catalogue: every ingested post, in the API process's memory, as columns.

Ranking 10,000 candidates must cost about what numpy needs for their vectors, so the
pipeline reads posts from here, not from Redis: one row per post, with its vectors in
contiguous int8 matrices per embedding space, each row scaled to its largest component
(`quantize`: a cosine is off by about 5e-4; a quarter of float32's memory, and a feed's
10,000 candidates score in about half float32's time, since gathering rows from memory is
the cost; numpy widens float16 too slowly to serve), author, creation time, and the features
the event consumer keeps changing (interaction counts per action, trending value,
impressions, the author's reach, CF item factors). Candidates are row numbers, and a
stage reads a feature of all of them with one numpy gather.

Redis stays the source of truth: `CatalogSync` (catalog_sync.py) loads the catalogue at
start and keeps it in step from the streams that writers append to. Nothing here does
I/O, so it is used from the event loop's thread only, without locks.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import get_args

import numpy as np
from cachetools import LRUCache

from feed.config import Action
from feed.stores.records import PostRecord
from feed.stores.trending import TrendingBase

ACTIONS: tuple[str, ...] = get_args(Action)  # column order of the counts matrix
ACTION_COLUMN = {a: i for i, a in enumerate(ACTIONS)}
NO_ROW = -1
QUANT = 127  # a stored vector's largest component, in units of its row's scale
DOT_BLOCK = 512  # rows gathered at a time by `dots`: 768 kB of 384-d float32, within a core's L2


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 rows, float32 scales) of a (n, dim) float matrix: row * scale ~ vector, the largest
    component stored as +-QUANT (a zero vector: zeros, scale 1)."""
    peak = np.abs(vectors).max(axis=1)
    scales = np.where(peak > 0, peak / QUANT, 1.0).astype(np.float32)
    return np.rint(vectors / scales[:, None]).astype(np.int8), scales


def _grow(array: np.ndarray, capacity: int, fill: float | bool | int = 0) -> np.ndarray:
    out = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


class PostCatalog:
    """Columns of every live post; rows of deleted posts stay allocated but not `alive`.

    `dims` gives the vector size of each embedding space (a space's matrix is allocated
    when a post first has a vector in it). `horizons_s` are the half-lives of the extra trending
    horizons (`RankingConfig.trending_horizons_s`): they name the sets `CatalogSync` reads and
    order the columns of `horizon_values`; values are decoded with each set's stored half-life.
    """

    def __init__(
        self, dims: Mapping[str, int], capacity: int = 1024, horizons_s: Sequence[float] = ()
    ) -> None:
        self._dims = dict(dims)
        self._capacity = capacity
        self.horizons_s = tuple(horizons_s)
        self.rows: dict[str, int] = {}  # post key -> row
        self.keys: list[str] = []  # row -> post key
        self.post_ids: list[int | str] = []  # row -> the host's post id
        self.alive = np.zeros(capacity, dtype=bool)
        self.author = np.full(capacity, NO_ROW, dtype=np.int64)  # row -> author code
        self.created_at = np.full(capacity, -np.inf)
        self.vectors: dict[str, np.ndarray] = {}  # space -> (capacity, dim) int8 (`quantize`)
        self.scales: dict[str, np.ndarray] = {}  # space -> (capacity,) float32: vector = row * scale
        self.has: dict[str, np.ndarray] = {}  # space -> (capacity,) bool: the post has a vector there
        self.counts = np.zeros((capacity, len(ACTIONS)), dtype=np.float32)
        self.trending = np.zeros(capacity)  # stored trending score, in units of `trending_base`
        self.trending_base: TrendingBase | None = None
        # (capacity, H) stored score per trending horizon, in units of that horizon's base
        self.horizons = np.zeros((capacity, len(self.horizons_s)))
        self.horizon_bases: list[TrendingBase | None] = [None] * len(self.horizons_s)
        self.impressions = np.zeros(capacity, dtype=np.float32)
        self.cf: np.ndarray | None = None  # (capacity, factors) item factors of model `cf_version`
        self.cf_known = np.zeros(capacity, dtype=bool)
        self.cf_version = 0
        self.author_codes: dict[str, int] = {}  # author key -> code
        self.author_keys: list[str] = []
        self.author_ids: list[int | str] = []  # code -> the host's author id
        self.reach = np.zeros(64, dtype=np.float32)  # code -> interactions the author received
        self.author_latest = np.zeros(64)  # code -> creation time of the author's newest live post
        self._timelines: dict[int, list[int]] = {}  # author code -> rows by created_at
        self.version = 0  # changes whenever a post is added or removed
        self.removals = 0  # changes whenever a post is removed (a key may come back on another row)
        self.trending_version = 0  # changes whenever a trending value changes
        self.counts_version = 0  # changes whenever interaction counts change
        self.horizons_version = 0  # changes whenever a trending horizon's value changes
        self._cached: dict[tuple[str, int, int], np.ndarray] = {}
        self._popular: tuple[int, int, float, np.ndarray] | None = None  # k, counts version, when, rows
        self._author_sets: LRUCache[tuple[frozenset[str], int], np.ndarray] = LRUCache(maxsize=4096)

    def __len__(self) -> int:
        return len(self.rows)

    # -- lookups ---------------------------------------------------------------

    def rows_of(self, post_keys: Iterable[str]) -> np.ndarray:
        """Rows of these posts, NO_ROW for posts the catalogue does not have."""
        return np.fromiter(map(self.rows.get, post_keys, repeat(NO_ROW)), dtype=np.int64)

    def authors_of(self, author_keys: frozenset[str]) -> np.ndarray:
        """Codes of these authors, leaving out authors of no post. Remembered per set (a
        request asks for its user's followed authors in three stages) until a new author
        gets a code."""
        cache_key = (author_keys, len(self.author_keys))
        codes = self._author_sets.get(cache_key)
        if codes is None:
            found = np.fromiter(map(self.author_codes.get, author_keys, repeat(NO_ROW)), dtype=np.int64)
            codes = np.asarray(found[found != NO_ROW])
            self._author_sets[cache_key] = codes
        return codes

    def gather(self, space: str, rows: np.ndarray) -> np.ndarray:
        """The float32 vectors of `rows` (valid row numbers) in `space` (which must be in `vectors`)."""
        vectors = np.take(self.vectors[space], rows, axis=0).astype(np.float32)
        vectors *= self.scales[space][rows, None]
        return vectors

    def dots(self, space: str, rows: np.ndarray, by: np.ndarray) -> np.ndarray:
        """(len(rows), len(by)) float32: the vectors of `rows` (valid row numbers) in `space` times
        each row of `by`. Gathered, widened and multiplied a block at a time: a block stays in
        the CPU's cache between the steps, where a whole gather (15 MB of float32 for 10,000
        candidates) is written to memory and read back: 2x faster here for a feed's candidates."""
        matrix, scales = self.vectors[space], self.scales[space]
        out = np.empty((len(rows), len(by)), dtype=np.float32)
        size = min(DOT_BLOCK, len(rows))
        raw = np.empty((size, matrix.shape[1]), dtype=matrix.dtype)
        wide = np.empty((size, matrix.shape[1]), dtype=np.float32)
        weights = np.ascontiguousarray(by.T, dtype=np.float32)
        for start in range(0, len(rows), DOT_BLOCK):
            part = rows[start : start + DOT_BLOCK]
            k = len(part)
            np.take(matrix, part, axis=0, out=raw[:k], mode="clip")  # "raise" would buffer `out`
            np.copyto(wide[:k], raw[:k])
            products = np.matmul(wide[:k], weights, out=out[start : start + k])
            products *= scales[part, None]
        return out

    def row_mask(self, rows: np.ndarray) -> np.ndarray:
        """A boolean lookup table over rows, True at `rows`, indexable by any candidate row
        (NO_ROW included, which is False): `mask[candidates.rows]` tests membership in O(n)."""
        mask = np.zeros(len(self.keys) + 1, dtype=bool)
        mask[rows[rows != NO_ROW]] = True
        return mask

    def author_mask(self, codes: np.ndarray) -> np.ndarray:
        """`row_mask` over author codes."""
        mask = np.zeros(len(self.author_keys) + 1, dtype=bool)
        mask[codes[codes != NO_ROW]] = True
        return mask

    def newest_by(self, authors: np.ndarray, per_author: int, newer_than: float) -> np.ndarray:
        """Rows of up to `per_author` newest posts of each author, created after `newer_than`."""
        picked: list[int] = []
        for code in authors.tolist():
            timeline = self._timelines.get(code)
            if timeline:
                picked.extend(timeline[-per_author:])
        rows = np.asarray(picked, dtype=np.int64)
        return rows[self.created_at[rows] > newer_than]

    def latest_post_time(self, authors: np.ndarray) -> float:
        """Creation time of the newest live post by any of these authors (0 if none)."""
        return float(self.author_latest[authors].max(initial=0.0))

    def top_trending(self, k: int) -> np.ndarray:
        """Rows of the `k` posts with the highest trending value, best first (cached until it changes)."""
        return self._top("trending", k, self.trending_version, self.trending)

    def top_popular(self, k: int, weights: np.ndarray, max_age_s: float = 5.0) -> np.ndarray:
        """Rows of the `k` posts with the most positive engagement ever (counts per action times
        `weights`, the positive action weights), best first. Recomputed when counts changed and
        the last result is older than `max_age_s`: a full pass costs milliseconds at a million
        posts, and all-time popularity moves slowly."""
        cached = self._popular
        if (
            cached is not None
            and cached[0] == k
            and (cached[1] == self.counts_version or time.monotonic() - cached[2] < max_age_s)
        ):
            return cached[3]
        n = len(self.keys)
        values = self.counts[:n] @ weights.astype(np.float32)
        values = np.where(self.alive[:n] & (values > 0), values, -np.inf)
        k_eff = min(k, int(np.isfinite(values).sum()))
        top = np.argpartition(-values, k_eff - 1)[:k_eff] if k_eff else np.empty(0, dtype=np.int64)
        top = top[np.argsort(-values[top], kind="stable")]
        self._popular = (k, self.counts_version, time.monotonic(), top)
        return top

    def newest(self, k: int) -> np.ndarray:
        """Rows of the `k` newest live posts, newest first (cached until a post comes or goes)."""
        return self._top("newest", k, self.version, self.created_at)

    def _top(self, name: str, k: int, version: int, values: np.ndarray) -> np.ndarray:
        cache_key = (name, k, version)
        top = self._cached.get(cache_key)
        if top is None:
            n = len(self.keys)
            masked = np.where(self.alive[:n], values[:n], -np.inf)
            if name != "newest":
                masked[masked <= 0] = -np.inf
            k_eff = min(k, n)
            top = np.argpartition(-masked, k_eff - 1)[:k_eff] if k_eff else np.empty(0, dtype=np.int64)
            top = top[np.argsort(-masked[top], kind="stable")]
            top = top[np.isfinite(masked[top])]
            self._cached = {key: v for key, v in self._cached.items() if key[0] != name}
            self._cached[cache_key] = top
        return top

    def trending_values(self, rows: np.ndarray, now: float) -> np.ndarray:
        """Decayed positive engagement of these posts at `now`."""
        if self.trending_base is None:
            return np.zeros(len(rows))
        base = self.trending_base
        out: np.ndarray = self.trending[rows] * 2.0 ** ((base.base - now) / base.half_life_s)
        return out

    def top_horizon(self, column: int, k: int) -> np.ndarray:
        """Rows of the `k` posts with the most engagement at trending horizon `column`, best first
        (cached until those values change)."""
        return self._top(f"horizon-{column}", k, self.horizons_version, self.horizons[:, column])

    def horizon_values(self, rows: np.ndarray, now: float) -> np.ndarray:
        """Decayed positive engagement of these posts at `now` per trending horizon: shape
        (len(rows), H), columns in `horizons_s` order (zero where a horizon has no base yet)."""
        decay = np.array(
            [0.0 if b is None else 2.0 ** ((b.base - now) / b.half_life_s) for b in self.horizon_bases]
        )
        out: np.ndarray = self.horizons[rows] * decay
        return out

    # -- changes -----------------------------------------------------------------

    def _author(self, author_key: str, author_id: int | str) -> int:
        code = self.author_codes.get(author_key)
        if code is None:
            code = len(self.author_keys)
            self.author_codes[author_key] = code
            self.author_keys.append(author_key)
            self.author_ids.append(author_id)
            if code >= len(self.reach):
                self.reach = _grow(self.reach, 2 * len(self.reach))
                self.author_latest = _grow(self.author_latest, len(self.reach))
        return code

    def _ensure_capacity(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, 2 * self._capacity)
        self.alive = _grow(self.alive, capacity, False)
        self.author = _grow(self.author, capacity, NO_ROW)
        self.created_at = _grow(self.created_at, capacity, -np.inf)
        self.counts = _grow(self.counts, capacity)
        self.trending = _grow(self.trending, capacity)
        self.horizons = _grow(self.horizons, capacity)
        self.impressions = _grow(self.impressions, capacity)
        self.cf_known = _grow(self.cf_known, capacity, False)
        if self.cf is not None:
            self.cf = _grow(self.cf, capacity)
        for space in self.vectors:
            self.vectors[space] = _grow(self.vectors[space], capacity)
            self.scales[space] = _grow(self.scales[space], capacity, 1.0)
            self.has[space] = _grow(self.has[space], capacity, False)
        self._capacity = capacity

    def upsert(self, records: Iterable[PostRecord]) -> list[int]:
        """Add or replace these posts; returns their rows."""
        out: list[int] = []
        pending: dict[str, tuple[list[int], list[np.ndarray]]] = {}  # quantized together, below
        for record in records:
            row = self.rows.get(record.key)
            if row is None:
                row = len(self.keys)
                self._ensure_capacity(row + 1)
                self.rows[record.key] = row
                self.keys.append(record.key)
                self.post_ids.append(record.post_id)
            else:
                self._unlink(row)
                self.post_ids[row] = record.post_id
            code = self._author(record.author_key, record.author_id)
            self.alive[row] = True
            self.author[row] = code
            self.created_at[row] = record.created_at
            for space, has in self.has.items():
                has[row] = space in record.vectors
            for space, vector in record.vectors.items():
                if space not in self.vectors:
                    dim = self._dims.get(space, len(vector))
                    self.vectors[space] = np.zeros((self._capacity, dim), dtype=np.int8)
                    self.scales[space] = np.ones(self._capacity, dtype=np.float32)
                    self.has[space] = np.zeros(self._capacity, dtype=bool)
                rows, vectors = pending.setdefault(space, ([], []))
                rows.append(row)
                vectors.append(vector)
                self.has[space][row] = True
            timeline = self._timelines.setdefault(code, [])
            bisect.insort(timeline, row, key=self.created_at.__getitem__)
            self.author_latest[code] = self.created_at[timeline[-1]]
            out.append(row)
        for space, (rows, vectors) in pending.items():
            self.vectors[space][rows], self.scales[space][rows] = quantize(np.asarray(vectors, np.float32))
        self.version += 1
        return out

    def _unlink(self, row: int) -> None:
        code = int(self.author[row])
        timeline = self._timelines.get(code)
        if timeline and row in timeline:
            timeline.remove(row)
            self.author_latest[code] = self.created_at[timeline[-1]] if timeline else 0.0

    def remove(self, post_keys: Iterable[str]) -> int:
        """Drop these posts (unknown keys are ignored); returns how many were dropped."""
        dropped = 0
        for key in post_keys:
            row = self.rows.pop(key, None)
            if row is None:
                continue
            self._unlink(row)
            self.alive[row] = False
            self.created_at[row] = -np.inf
            self.trending[row] = 0.0
            self.horizons[row] = 0.0
            self.cf_known[row] = False
            dropped += 1
        if dropped:
            self.version += 1
            self.removals += 1
            self.trending_version += 1
        return dropped

    def set_counts(self, counts: Mapping[str, Mapping[str, float]]) -> None:
        """Replace the interaction counts per action of these posts."""
        for key, per_action in counts.items():
            row = self.rows.get(key)
            if row is not None:
                values = np.zeros(len(ACTIONS), dtype=np.float32)
                for action, n in per_action.items():
                    column = ACTION_COLUMN.get(action)
                    if column is not None:
                        values[column] = n
                self.counts[row] = values
        self.counts_version += 1

    def set_trending(
        self, base: TrendingBase | None, stored: Mapping[str, float], reset: bool = False
    ) -> None:
        """Set these posts' stored trending scores (relative to `base`); `reset` zeroes all others."""
        if reset:
            self.trending[:] = 0.0
        self.trending_base = base
        rows = self.rows_of(stored)
        known = rows != NO_ROW
        self.trending[rows[known]] = np.fromiter(stored.values(), dtype=np.float64, count=len(stored))[known]
        self.trending_version += 1

    def set_horizons(
        self, bases: Sequence[TrendingBase | None], stored: Sequence[Mapping[str, float]], reset: bool = False
    ) -> None:
        """Set these posts' stored scores per trending horizon (`bases` and `stored`: one per
        horizon, in `horizons_s` order); `reset` zeroes all others."""
        if reset:
            self.horizons[:] = 0.0
        self.horizon_bases = list(bases)
        self.horizons_version += 1
        for column, scores in enumerate(stored):
            rows = self.rows_of(scores)
            known = rows != NO_ROW
            values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
            self.horizons[rows[known], column] = values[known]

    def set_impressions(self, impressions: Mapping[str, float]) -> None:
        """Set how many times these posts were served."""
        rows = self.rows_of(impressions)
        known = rows != NO_ROW
        values = np.fromiter(impressions.values(), dtype=np.float32, count=len(impressions))
        self.impressions[rows[known]] = values[known]

    def set_reach(self, reach: Mapping[str, float]) -> None:
        """Set how many interactions these authors' posts received."""
        for author, value in reach.items():
            code = self.author_codes.get(author)
            if code is not None:
                self.reach[code] = value

    def set_cf(self, version: int, factors: Mapping[str, np.ndarray], dim: int) -> None:
        """Replace every post's CF item factors by those of model `version`."""
        self.cf = np.zeros((self._capacity, dim), dtype=np.float32)
        self.cf_known[:] = False
        for key, vector in factors.items():
            row = self.rows.get(key)
            if row is not None and len(vector) == dim:
                self.cf[row] = vector
                self.cf_known[row] = True
        self.cf_version = version

    # -- snapshots ---------------------------------------------------------------

    def export(self) -> CatalogState:
        """What a snapshot stores: the first `len(keys)` rows of every column (views, not
        copies: the caller copies what it must keep while the catalogue changes), the key and
        author lists (copied), the trending bases and the CF model's version."""
        n = len(self.keys)
        columns = {name: getattr(self, name)[:n] for name in ROW_COLUMNS}
        if self.cf is not None:
            columns["cf"] = self.cf[:n]
        columns.update({f"has.{space}": has[:n] for space, has in self.has.items()})
        columns.update({f"scale.{space}": scales[:n] for space, scales in self.scales.items()})
        authors = len(self.author_keys)
        columns.update(reach=self.reach[:authors], author_latest=self.author_latest[:authors])
        return CatalogState(
            keys=list(self.keys),
            post_ids=list(self.post_ids),
            author_keys=list(self.author_keys),
            author_ids=list(self.author_ids),
            columns=columns,
            vectors={space: v[:n] for space, v in self.vectors.items()},
            trending_base=self.trending_base,
            horizon_bases=list(self.horizon_bases),
            cf_version=self.cf_version,
        )

    def restore(self, state: CatalogState) -> None:
        """Take a snapshot's state in place of everything held (a new catalogue's first step).
        Vector matrices are used as given (a copy-on-write mapping stays one), with capacity
        for as many rows as they have; the other columns are copied out to that capacity."""
        n = len(state.keys)
        self._capacity = max([n, self._capacity, *(len(v) for v in state.vectors.values())])
        self.keys, self.post_ids = list(state.keys), list(state.post_ids)
        for name, fill in ROW_COLUMNS.items():
            setattr(self, name, _grow(state.columns[name], self._capacity, fill))
        cf = state.columns.get("cf")
        self.cf = None if cf is None else _grow(cf, self._capacity)
        self.vectors = {
            space: v if len(v) == self._capacity else _grow(v, self._capacity)
            for space, v in state.vectors.items()
        }
        self.has = {s: _grow(state.columns[f"has.{s}"], self._capacity, False) for s in self.vectors}
        self.scales = {s: _grow(state.columns[f"scale.{s}"], self._capacity, 1.0) for s in self.vectors}
        self.author_keys, self.author_ids = list(state.author_keys), list(state.author_ids)
        self.author_codes = {key: code for code, key in enumerate(self.author_keys)}
        size = max(64, 2 * len(self.author_keys))
        self.reach = _grow(state.columns["reach"], size)
        self.author_latest = _grow(state.columns["author_latest"], size)
        self.trending_base, self.horizon_bases = state.trending_base, list(state.horizon_bases)
        self.cf_version = state.cf_version
        alive = np.flatnonzero(self.alive[:n])
        self.rows = {self.keys[row]: row for row in alive.tolist()}
        self._timelines = {}
        for row in alive[np.argsort(self.created_at[alive], kind="stable")].tolist():
            self._timelines.setdefault(int(self.author[row]), []).append(row)
        self.version += 1
        self.removals += 1
        self.trending_version += 1
        self.counts_version += 1
        self.horizons_version += 1


# per-row columns a snapshot keeps, with the fill of rows beyond it
ROW_COLUMNS: dict[str, float | bool | int] = {
    "alive": False,
    "author": NO_ROW,
    "created_at": -np.inf,
    "counts": 0,
    "trending": 0,
    "horizons": 0,
    "impressions": 0,
    "cf_known": False,
}


@dataclass
class CatalogState:
    """A catalogue as a snapshot holds it (`PostCatalog.export` / `restore`)."""

    keys: list[str]
    post_ids: list[int | str]
    author_keys: list[str]
    author_ids: list[int | str]
    # ROW_COLUMNS, `cf`, `has.<space>`, `scale.<space>`, `reach`, `author_latest`
    columns: dict[str, np.ndarray]
    vectors: dict[str, np.ndarray]  # space -> (rows, dim) int8 (`quantize`)
    trending_base: TrendingBase | None
    horizon_bases: list[TrendingBase | None]
    cf_version: int
