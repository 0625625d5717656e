"""Where model weights live, and the one error every loader raises when it cannot load.

Nothing is downloaded at run time. Weights the Python packages do not ship are read
from `MODELS_DIR` (see `scripts/prepare_models.sh`); a path given as absolute is used
as it is.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

MEDIA_EXTRA_HINT = "install the media extra: scripts/setup_env.sh media (or pip install 'feed-engine[media]')"


class ModelUnavailable(Exception):
    """A model cannot be loaded (weights missing, or its library is not installed).

    Retrying cannot fix it; the message names what is missing and how to get it.
    """


def offline() -> None:
    """Make the model libraries never reach a hub or pip at run time (set before importing them).

    Also pins OMP_NUM_THREADS to the CPU count unless set: importing ultralytics would
    otherwise set it to 1, and CTranslate2 (Whisper) would then use one core.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")


def weights_path(models_dir: Path, path: Path) -> Path:
    """`path` under `models_dir` unless it is absolute."""
    return path if path.is_absolute() else models_dir / path


def require_file(path: Path, what: str, how: str) -> Path:
    """`path` if it exists, else `ModelUnavailable` naming the file and how to obtain it."""
    if not path.exists():
        raise ModelUnavailable(f"{what} not found: {path} ({how})")
    return path


def import_media(module: str) -> ModuleType:
    """Import a media-extra library, or `ModelUnavailable` saying how to install it."""
    offline()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelUnavailable(f"{module} is not installed ({exc}); {MEDIA_EXTRA_HINT}") from exc
