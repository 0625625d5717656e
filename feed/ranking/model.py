"""A trained ranking model as the API serves it: a LightGBM booster, its feature names, a version.

The stored form is one bytes value (a JSON header line, then LightGBM's text model), so a
model and the names of the features it was trained on always travel together, and a swap
is one Redis write. Prediction runs on one thread: a request's 1,000 rows are too few to
share, and the API's other requests need the other cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import msgspec
import numpy as np


class _Header(msgspec.Struct):
    version: int
    features: list[str]
    trained_at: float


@dataclass(frozen=True)
class RankerModel:
    """A booster over `features` (names from `feed.pipeline.features.FEATURES`, a subset, in its
    column order); `version` orders models (microseconds of the training's start)."""

    version: int
    features: tuple[str, ...]
    trained_at: float
    booster: lgb.Booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (higher ranks first) for rows of this model's features."""
        out: Any = self.booster.predict(x, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(n, len(features) + 1): each feature's additive share of the raw score (SHAP values
        by LightGBM's `pred_contrib`), the last column the model's base value."""
        out: Any = self.booster.predict(x, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def to_bytes(self) -> bytes:
        header = msgspec.json.encode(_Header(self.version, list(self.features), self.trained_at))
        return header + b"\n" + self.booster.model_to_string().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RankerModel:
        head, _, body = raw.partition(b"\n")
        header = msgspec.json.decode(head, type=_Header)
        booster = lgb.Booster(model_str=body.decode())
        return cls(header.version, tuple(header.features), header.trained_at, booster)


class RankerSlot:
    """The model a process serves now (None: the hand-set formula ranks). Replaced whole by
    the model sync, read by the reranker: a request sees one model from start to end."""

    def __init__(self, model: RankerModel | None = None) -> None:
        self.model = model
