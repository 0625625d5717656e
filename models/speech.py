"""Speech to text with faster-whisper (tiny, int8 on CPU by default), with language detection."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.files import import_media, require_file

SAMPLE_RATE = 16_000
HOW_TO_GET = (
    "put a CTranslate2 Whisper model folder there (model.bin, config.json, tokenizer.json, vocabulary), "
    "e.g. faster-whisper-tiny; scripts/prepare_models.sh --whisper DIR"
)


@dataclass(frozen=True, slots=True)
class Transcript:
    """What was said, in which language (ISO code) with what probability, over how many seconds."""

    text: str
    language: str
    language_probability: float
    duration_s: float


class SpeechTranscriber:
    """Loads the model once per process on first use; `transcribe` is thread-safe."""

    def __init__(
        self,
        model_dir: Path,
        compute_type: str = "int8",
        beam_size: int = 1,
        max_new_tokens: int | None = None,
    ) -> None:
        self._dir = model_dir
        self._compute_type = compute_type
        self._beam_size = beam_size
        self._max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            for name in ("model.bin", "config.json", "tokenizer.json"):
                # tokenizer.json too: without it faster-whisper would fetch one from a hub
                require_file(self._dir / name, "Whisper model file", HOW_TO_GET)
            faster_whisper = import_media("faster_whisper")
            self._model = faster_whisper.WhisperModel(
                str(self._dir), device="cpu", compute_type=self._compute_type, local_files_only=True
            )
        return self._model

    def load(self) -> None:
        """Load now (raises `ModelUnavailable` if it cannot)."""
        with self._lock:
            self._load()

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcribe 16 kHz mono float32 waveforms, one `Transcript` each."""
        out: list[Transcript] = []
        with self._lock:
            model = self._load()
            for audio in audios:
                segments, info = model.transcribe(
                    audio,
                    beam_size=self._beam_size,
                    condition_on_previous_text=False,
                    without_timestamps=True,
                    max_new_tokens=self._max_new_tokens,
                )
                text = " ".join(s.text.strip() for s in segments).strip()
                out.append(
                    Transcript(text, info.language, float(info.language_probability), float(info.duration))
                )
        return out
