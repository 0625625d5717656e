"""CLIP (open_clip, ViT-B-32 by default): images and texts in one 512-d space, L2-normalised."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.files import import_media, require_file

if TYPE_CHECKING:
    from PIL.Image import Image

HOW_TO_GET = (
    "save an open_clip checkpoint there, e.g. the laion2b_s34b_b79k ViT-B-32 weights; "
    "scripts/prepare_models.sh --clip FILE copies and checks it"
)


class ClipEncoder:
    """Loads the model once per process on first use; both encoders are thread-safe.

    `config_file` registers a custom open_clip architecture (JSON) before loading.
    """

    def __init__(
        self, model_name: str, weights: Path, config_file: Path | None = None, batch_size: int = 32
    ) -> None:
        self._name = model_name
        self._weights = weights
        self._config_file = config_file
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            require_file(self._weights, "CLIP weights", HOW_TO_GET)
            open_clip = import_media("open_clip")
            if self._config_file is not None:
                open_clip.add_model_config(
                    require_file(self._config_file, "CLIP model config", "a JSON file")
                )
            model, _, preprocess = open_clip.create_model_and_transforms(
                self._name, pretrained=str(self._weights), device="cpu"
            )
            model.eval()
            self._loaded = (model, preprocess, open_clip.get_tokenizer(self._name))
        return self._loaded

    def load(self) -> None:
        """Load now (raises `ModelUnavailable` if it cannot)."""
        with self._lock:
            self._load()

    def encode_images(self, images: Sequence[Image]) -> np.ndarray:
        """(len(images), dim) float32 unit vectors of RGB images."""
        import torch

        with self._lock:
            model, preprocess, _ = self._load()
            out = []
            with torch.inference_mode():
                for i in range(0, len(images), self._batch_size):
                    batch = torch.stack([preprocess(im) for im in images[i : i + self._batch_size]])
                    out.append(model.encode_image(batch, normalize=True).float().numpy())
        return _stack(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors through the text tower (truncated to its context)."""
        import torch

        with self._lock:
            model, _, tokenizer = self._load()
            out = []
            with torch.inference_mode():
                for i in range(0, len(texts), self._batch_size):
                    tokens = tokenizer(list(texts[i : i + self._batch_size]))
                    out.append(encode_text_trimmed(model, tokens).float().numpy())
        return _stack(out)


def encode_text_trimmed(model: Any, tokens: Any) -> Any:
    """`model.encode_text(tokens, normalize=True)`, computed only up to the batch's longest text.

    open_clip pads every text to the full context (77 tokens) and runs the tower over all
    of it; with the causal mask the padding cannot change the pooled end-of-text feature,
    so cutting it gives the same vectors at a fraction of the cost (post texts are short).
    Applies to open_clip's standard text tower with end-of-text pooling; other towers run
    `encode_text` as it is. Mirrors `open_clip.CLIP.encode_text` (a test compares the two).
    """
    import open_clip
    import torch
    from open_clip.transformer import text_global_pool

    if not (
        isinstance(model, open_clip.CLIP) and model.text_pool_type == "argmax" and model.attn_mask is not None
    ):
        return model.encode_text(tokens, normalize=True)
    n = int(tokens.argmax(dim=-1).max()) + 1  # the end-of-text token has the largest id
    tokens = tokens[:, :n]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:n].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, "argmax")
    x = (
        model.text_projection(x)
        if isinstance(model.text_projection, torch.nn.Linear)
        else x @ model.text_projection
    )
    return torch.nn.functional.normalize(x, dim=-1)


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
