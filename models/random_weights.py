"""Models with random weights, built offline and saved in the formats the real loaders read.

Tests build `tiny` ones (seconds to build, megabytes on disk); the ingest benchmark builds
full-size ones (ViT-B-32, YOLOv8n, a Whisper with tiny's dimensions), which cost the same
compute as the trained weights. Random weights prove shapes, batching, dtypes,
normalisation and the loading code paths, never semantics; and a random Whisper decodes
until its length limit, so it is slower than a trained one, which stops at the end of speech.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TINY_CLIP = "TinyCLIP-test"
FULL_CLIP = "ViT-B-32"


@dataclass(frozen=True)
class RandomModels:
    """Paths to the built models, as the settings name them."""

    models_dir: Path
    clip_model: str
    clip_config: Path | None
    clip_weights: Path
    yolo_weights: Path
    whisper_dir: Path

    def settings(self) -> dict[str, Any]:
        """Settings fields that point the loaders at these models."""
        return {
            "models_dir": self.models_dir,
            "clip_model": self.clip_model,
            "clip_model_config": self.clip_config,
            "clip_weights": self.clip_weights,
            "yolo_weights": self.yolo_weights,
            "whisper_model": self.whisper_dir,
        }


def build_clip(folder: Path, tiny: bool) -> tuple[str, Path | None, Path]:
    """ViT-B-32, or (tiny) an architecture with its 512-d output but one narrow layer per tower.

    Returns the open_clip model name, the config file to register (tiny only) and the weights.
    """
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / ("tiny-clip.pt" if tiny else "ViT-B-32-random.pt")
    if not tiny:
        torch.save(open_clip.create_model(FULL_CLIP, pretrained=None).state_dict(), weights)
        return FULL_CLIP, None, weights
    config = folder / f"{TINY_CLIP}.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 512,
                "vision_cfg": {
                    "image_size": 64,
                    "layers": 1,
                    "width": 64,
                    "patch_size": 16,
                    "head_width": 32,
                },
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
            }
        )
    )
    open_clip.add_model_config(config)
    torch.save(open_clip.create_model(TINY_CLIP, pretrained=None).state_dict(), weights)
    return TINY_CLIP, config, weights


def build_yolo(folder: Path) -> Path:
    """YOLOv8n built from its yaml with random weights, saved as a .pt checkpoint."""
    import os

    from models.files import offline

    offline()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder / ".ultralytics"))
    from ultralytics.models.yolo import YOLO

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "yolov8n-random.pt"
    YOLO("yolov8n.yaml").save(str(weights))
    return weights


def build_whisper(folder: Path, tiny: bool, seed: int = 0) -> Path:
    """A Whisper with tiny's dimensions, or (tiny) a one-layer one, built with transformers and
    converted to CTranslate2 int8.

    The weights come from `seed`, so every build transcribes alike: one unseeded build in CI
    transcribed a test tone as nothing (seed 0 gave text in 100 of 100 runs here).

    Its tokenizer is byte-level with Whisper's special tokens at Whisper's own ids
    (fillers stand in for the real BPE merges), written as tokenizer.json beside the model.
    """
    import ctranslate2
    import torch
    from faster_whisper.tokenizer import _LANGUAGE_CODES
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperForConditionalGeneration

    source = folder / "hf"
    source.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"<|filler{i}|>": i for i in range(len(vocab), 50257)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    languages = [f"<|{code}|>" for code in _LANGUAGE_CODES]
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *languages,
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials])
    token_id = {s: 50257 + i for i, s in enumerate(specials)}  # Whisper's own ids
    assert all(tok.token_to_id(s) == i for s, i in token_id.items())
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(source)
    eot = token_id["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64 if tiny else 384,
        encoder_layers=1 if tiny else 4,
        decoder_layers=1 if tiny else 4,
        encoder_attention_heads=2 if tiny else 6,
        decoder_attention_heads=2 if tiny else 6,
        encoder_ffn_dim=128 if tiny else 1536,
        decoder_ffn_dim=128 if tiny else 1536,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=token_id["<|startoftranscript|>"],
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        WhisperForConditionalGeneration(config).save_pretrained(source)
    out = folder / "ct2"
    ctranslate2.converters.TransformersConverter(str(source), copy_files=["tokenizer.json"]).convert(
        str(out), quantization="int8", force=True
    )
    converted = json.loads((out / "config.json").read_text())
    converted["lang_ids"] = [token_id[lang] for lang in languages]
    (out / "config.json").write_text(json.dumps(converted))
    return out


def build_all(models_dir: Path, tiny: bool = True) -> RandomModels:
    """Build every model under `models_dir`."""
    clip_model, config, clip_weights = build_clip(models_dir / "clip", tiny)
    return RandomModels(
        models_dir=models_dir,
        clip_model=clip_model,
        clip_config=config,
        clip_weights=clip_weights,
        yolo_weights=build_yolo(models_dir / "yolo"),
        whisper_dir=build_whisper(models_dir / "whisper", tiny),
    )
