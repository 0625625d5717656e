"""The candidate batch: every candidate of one request as aligned numpy columns, and the
ranked posts a page hands out.

Candidates travel through the pipeline as one columnar batch (rows of the post catalogue and
a column per feature and score part); `RankedPost` objects exist only for the page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from feed.stores.catalog.model import NO_ROW, PostCatalog

_EMPTY = np.empty(0)


@dataclass(slots=True)
class Candidates:
    """The candidates of one request as aligned columns: entry i of every array is candidate i.

    `rows` are post catalogue rows (NO_ROW for a post the catalogue does not have); `source`
    indexes `source_names`. Candidate hydrators fill the feature columns (None until then),
    scorers add `parts` (summed) and `factors` (multiplied), and `rescore()` sets
    `score = sum(parts) * prod(factors)`. Selecting, filtering and reordering all go
    through `take`, which indexes every column at once.
    """

    rows: np.ndarray
    source: np.ndarray
    source_score: np.ndarray
    in_network: np.ndarray
    source_names: tuple[str, ...] = ()
    author: np.ndarray | None = None  # author code in the catalogue (NO_ROW: unknown)
    alive: np.ndarray | None = None  # the post is in the catalogue
    created_at: np.ndarray | None = None
    counts: np.ndarray | None = None  # (n, len(ACTIONS)) interactions per action
    trending: np.ndarray | None = None  # decayed positive engagement now
    impressions: np.ndarray | None = None  # times the engine served the post
    author_reach: np.ndarray | None = None  # interactions the post's author has received
    cf: np.ndarray | None = None  # (n, factors) item factors of the user's CF model
    cf_known: np.ndarray | None = None  # the model has factors for the post
    texts: np.ndarray | None = None  # (object) text, transcript and detected objects, when needed
    found_by: np.ndarray | None = None  # bit i set: source SOURCE_BITS[i] returned the post
    followees_engaged: np.ndarray | None = None  # people the user follows who engaged with it
    # (n, 2 * len(SPACES)) float32: cos(user vector, post vector) per space and horizon (long,
    # short), NaN where either lacks it; the similarity scorer's, reused by the ranker's features
    cosines: np.ndarray | None = None
    # (n, len(FEATURES)) float32: the learned ranker's features as the batch was ranked with them
    # (`features.attach_features`), logged with the page; None until a reranker attaches them
    features: np.ndarray | None = None
    ranker_version: int = 0  # the learned model that ranked the batch (0: the hand-set formula)
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray = field(default_factory=lambda: _EMPTY)
    # per-feature contributions to the learned ranker's score (NaN where not computed); not summed
    contributions: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        rows: np.ndarray,
        source: str,
        source_score: np.ndarray | None = None,
        in_network: bool = False,
    ) -> Candidates:
        """A batch from one source."""
        n = len(rows)
        return cls(
            rows=np.asarray(rows, dtype=np.int64),
            source=np.zeros(n, dtype=np.int16),
            source_score=np.zeros(n) if source_score is None else np.asarray(source_score, dtype=np.float64),
            in_network=np.full(n, in_network),
            source_names=(source,),
            score=np.zeros(n),
        )

    @classmethod
    def concat(cls, batches: Sequence[Candidates]) -> Candidates:
        """Source batches one after the other, with their parts and factors (a batch without
        one gets the neutral value: 0 for a part, 1 for a factor)."""
        if not batches:
            return cls.of(np.empty(0, dtype=np.int64), "none")
        names = tuple(name for b in batches for name in b.source_names)
        offsets = np.cumsum([0, *(len(b.source_names) for b in batches)])

        def joined(attr: str, neutral: float) -> dict[str, np.ndarray]:
            columns = sorted({k for b in batches for k in getattr(b, attr)})
            return {
                k: np.concatenate([getattr(b, attr).get(k, np.full(len(b), neutral)) for b in batches])
                for k in columns
            }

        return cls(
            rows=np.concatenate([b.rows for b in batches]),
            source=np.concatenate([b.source + o for b, o in zip(batches, offsets, strict=False)]),
            source_score=np.concatenate([b.source_score for b in batches]),
            in_network=np.concatenate([b.in_network for b in batches]),
            source_names=names,
            parts=joined("parts", 0.0),
            factors=joined("factors", 1.0),
            score=np.concatenate([b.score for b in batches]),
        )

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray | slice) -> Candidates:
        """The candidates at `index` (positions, a boolean mask or a slice), in its order."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value[index]
            elif isinstance(value, dict):
                value = {k: v[index] for k, v in value.items()}
            out[f.name] = value
        return Candidates(**out)

    def rescore(self) -> np.ndarray:
        """score = (sum of parts) * (product of factors); returns it."""
        total = np.zeros(len(self))
        for part in self.parts.values():
            total += part
        for factor in self.factors.values():
            total *= factor
        self.score = total
        return total

    def known(self) -> np.ndarray:
        """Mask of candidates the catalogue has."""
        return np.asarray(self.rows != NO_ROW)

    def sort(self) -> Candidates:
        """By score, best first (ties keep their order)."""
        return self.take(np.argsort(-self.score, kind="stable"))

    def top(self, k: int) -> Candidates:
        """The `k` best by score, best first (ties keep their order), without sorting the rest."""
        if len(self) <= k:
            return self.sort()
        best = np.argpartition(-self.score, k - 1)[:k]
        return self.take(best[np.lexsort((best, -self.score[best]))])


def required(column: np.ndarray | None, name: str) -> np.ndarray:
    """A feature column a stage needs; raises (the stage fails and is skipped) when the
    candidate hydrator that fills it is switched off."""
    if column is None:
        raise RuntimeError(f"needs the `{name}` column (its candidate hydrator is off)")
    return column


@dataclass(frozen=True, slots=True)
class RankedPost:
    """A ranked candidate as the pipeline hands it out: the post, its source and score parts."""

    post_key: str
    post_id: int | str
    author_id: int | str
    source: str
    score: float
    parts: dict[str, float]
    factors: dict[str, float]
    in_network: bool = False
    contributions: dict[str, float] = field(default_factory=dict)
    features: np.ndarray | None = field(default=None, compare=False, repr=False)  # its row of the batch's
    ranker_version: int = 0  # the batch's


def ranked_posts(catalog: PostCatalog, batch: Candidates) -> list[RankedPost]:
    """The batch's known candidates as `RankedPost`s, in order."""
    batch = batch.take(batch.known())
    n = len(batch)

    def per_item(columns: dict[str, np.ndarray]) -> list[dict[str, float]]:
        if not columns:
            return [{} for _ in range(n)]
        names = list(columns)
        return [
            {k: v for k, v in zip(names, values, strict=True) if v == v}  # NaN: not computed
            for values in np.column_stack(list(columns.values())).tolist()
        ]

    keys, post_ids, author_ids = catalog.keys, catalog.post_ids, catalog.author_ids
    features = [None] * n if batch.features is None else list(batch.features)
    return [
        RankedPost(
            keys[row],
            post_ids[row],
            author_ids[author],
            batch.source_names[source],
            score,
            parts,
            factors,
            in_network,
            contributions,
            x,
            batch.ranker_version,
        )
        for row, author, source, score, in_network, parts, factors, contributions, x in zip(
            batch.rows.tolist(),
            catalog.author[batch.rows].tolist(),
            batch.source.tolist(),
            batch.score.tolist(),
            batch.in_network.tolist(),
            per_item(batch.parts),
            per_item(batch.factors),
            per_item(batch.contributions),
            features,
            strict=True,
        )
    ]
