"""Object detection with ultralytics YOLO (YOLOv8n by default): class names with counts."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.files import import_media, require_file

if TYPE_CHECKING:
    from PIL.Image import Image

HOW_TO_GET = (
    "save yolov8n.pt from the Ultralytics release assets there; scripts/prepare_models.sh --yolo FILE"
)


class ObjectDetector:
    """Loads the weights once per process on first use; `detect_objects` is thread-safe."""

    def __init__(self, weights: Path, confidence: float, image_size: int = 640, batch_size: int = 16) -> None:
        self._weights = weights
        self._confidence = confidence
        self._image_size = image_size
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            require_file(self._weights, "YOLO weights", HOW_TO_GET)
            # ultralytics keeps a settings file; keep it beside the weights, not in the home folder
            os.environ.setdefault("YOLO_CONFIG_DIR", str(self._weights.parent / ".ultralytics"))
            ultralytics = import_media("ultralytics")
            self._model = ultralytics.YOLO(str(self._weights), task="detect")
        return self._model

    def load(self) -> None:
        """Load now (raises `ModelUnavailable` if it cannot)."""
        with self._lock:
            self._load()

    def detect_objects(self, images: Sequence[Image]) -> list[dict[str, int]]:
        """For each RGB image, the detected class names above the confidence threshold, with counts."""
        import torch

        out: list[dict[str, int]] = []
        threads = torch.get_num_threads()
        with self._lock:
            model = self._load()
            for i in range(0, len(images), self._batch_size):
                try:
                    results = model.predict(
                        list(images[i : i + self._batch_size]),
                        conf=self._confidence,
                        imgsz=self._image_size,
                        device="cpu",
                        verbose=False,
                    )
                finally:  # ultralytics sets torch's threads to cpu_count - 1; the other models share them
                    torch.set_num_threads(threads)
                for result in results:
                    names = result.names
                    out.append(dict(Counter(names[int(c)] for c in result.boxes.cls.tolist())))
        return out
