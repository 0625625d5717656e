"""The encoders an ingest worker uses, behind narrow interfaces so tests can stand one in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from models.clip import ClipEncoder
from models.detect import ObjectDetector
from models.files import weights_path
from models.speech import SpeechTranscriber, Transcript
from models.text import TextEncoder

if TYPE_CHECKING:
    from PIL.Image import Image

    from feed.config import Settings


class TextModel(Protocol):
    """Sentence embeddings for the `text` space."""

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(n, text dim) float32 unit vectors."""


class ImageTextModel(Protocol):
    """A joint image/text space (CLIP) for the `image` space."""

    def load(self) -> None:
        """Load now; raises `ModelUnavailable` if it cannot."""

    def encode_images(self, images: Sequence[Image]) -> np.ndarray:
        """(n, image dim) float32 unit vectors of RGB images."""

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, image dim) float32 unit vectors of texts, comparable with image vectors."""


class DetectorModel(Protocol):
    """Object classes in images."""

    def load(self) -> None:
        """Load now; raises `ModelUnavailable` if it cannot."""

    def detect_objects(self, images: Sequence[Image]) -> list[dict[str, int]]:
        """Per image: class name -> count."""


class SpeechModel(Protocol):
    """Speech to text."""

    def load(self) -> None:
        """Load now; raises `ModelUnavailable` if it cannot."""

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Per 16 kHz mono waveform: its transcript."""


@dataclass(frozen=True, slots=True)
class ModelSet:
    """One worker process's encoders (each loads its weights on first use)."""

    text: TextModel
    clip: ImageTextModel
    detector: DetectorModel
    speech: SpeechModel


def load_model_set(settings: Settings) -> ModelSet:
    """The configured models; nothing is read from disk until a model is first used."""
    root = settings.models_dir
    return ModelSet(
        text=TextEncoder(settings.text_model_path),
        clip=ClipEncoder(
            settings.clip_model, weights_path(root, settings.clip_weights), settings.clip_model_config
        ),
        detector=ObjectDetector(weights_path(root, settings.yolo_weights), settings.yolo_confidence),
        speech=SpeechTranscriber(
            weights_path(root, settings.whisper_model),
            settings.whisper_compute_type,
            max_new_tokens=settings.whisper_max_new_tokens,
        ),
    )
