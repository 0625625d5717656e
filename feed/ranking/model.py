"""A trained ranking model as the API serves it: a LightGBM booster, its feature names, a version.

The stored form is one bytes value (a JSON header line, then LightGBM's text model), so a
model and the names of the features it was trained on always travel together, and a swap
is one Redis write. Prediction runs on one thread: a request's 1,000 rows are too few to
share, and the API's other requests need the other cores.

Serving predicts with the trees compiled to machine code by lleaves (LLVM): about 0.6 ms for
1,000 rows of a 150-tree model here, against about 4.3 ms through LightGBM's own predictor. Compiling
takes about 5 s, so a process serves a new model through LightGBM until its compiled form is
ready (`compiled`), and keeps the object file under the data folder, where the other API
processes on the host load it in milliseconds.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np

if TYPE_CHECKING:  # LightGBM's import takes seconds (it probes for pandas, scikit-learn, dask):
    import lightgbm as lgb  # the API imports it with its first model, off the event loop


class _Header(msgspec.Struct):
    version: int
    features: list[str]
    trained_at: float
    near_duplicate_strength: float | None = None


class _Predictor(Protocol):
    def predict(self, data: np.ndarray, n_jobs: int = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class RankerModel:
    """A booster over `features` (names from `feed.pipeline.features.FEATURES`, a subset, in its
    column order); `version` orders models (microseconds of the training's start)."""

    version: int
    features: tuple[str, ...]
    trained_at: float
    booster: lgb.Booster
    compiled: _Predictor | None = None  # the same trees as machine code (`compiled()`)
    # the near-duplicate suppression its training chose (None: the setting's); see NearDuplicateReranker
    near_duplicate_strength: float | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (higher ranks first) for rows of this model's features."""
        if self.compiled is not None:
            return np.asarray(self.compiled.predict(x.astype(np.float64, copy=False), n_jobs=1))
        out: Any = self.booster.predict(x, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def score(self, x: np.ndarray) -> np.ndarray:
        """The ranker's score: sigmoid of the raw score, in (0, 1), so the multiplicative
        rerankers after it keep their meaning."""
        return np.asarray(1.0 / (1.0 + np.exp(-self.predict(x))), dtype=np.float64)

    def with_compiled(self, folder: Path) -> RankerModel:
        """This model with its trees compiled (blocking: seconds; run it off the event loop). The
        object file is kept as `folder/<version>.o` and reused when it is there."""
        import lleaves

        folder.mkdir(parents=True, exist_ok=True)
        cache = folder / f"{self.version}.o"
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            text = Path(scratch) / "model.txt"
            self.booster.save_model(str(text))
            compiled = lleaves.Model(model_file=str(text))
            if cache.exists():
                compiled.compile(cache=str(cache))
            else:
                built = Path(scratch) / "model.o"
                compiled.compile(cache=str(built))
                os.replace(built, cache)  # whole or not at all, for the other processes
        return dataclasses.replace(self, compiled=compiled)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(n, len(features) + 1): each feature's additive share of the raw score (SHAP values
        by LightGBM's `pred_contrib`), the last column the model's base value."""
        out: Any = self.booster.predict(x, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def to_bytes(self) -> bytes:
        header = msgspec.json.encode(
            _Header(self.version, list(self.features), self.trained_at, self.near_duplicate_strength)
        )
        return header + b"\n" + self.booster.model_to_string().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RankerModel:
        """The model `to_bytes` wrote (blocking: the first call imports LightGBM)."""
        import lightgbm as lgb

        head, _, body = raw.partition(b"\n")
        header = msgspec.json.decode(head, type=_Header)
        booster = lgb.Booster(model_str=body.decode())
        return cls(
            header.version,
            tuple(header.features),
            header.trained_at,
            booster,
            near_duplicate_strength=header.near_duplicate_strength,
        )


class RankerSlot:
    """The model a process serves now (None: the hand-set formula ranks). Replaced whole by
    the model sync, read by the reranker: a request sees one model from start to end."""

    def __init__(self, model: RankerModel | None = None) -> None:
        self.model = model
