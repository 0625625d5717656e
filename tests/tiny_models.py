"""Small models with random weights, built offline, saved in the formats the real loaders read.

Random weights prove shapes, batching, dtypes, normalisation and the loading code paths,
never semantics (tests that need meaning use stand-in encoders).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TINY_CLIP = "TinyCLIP-test"


@dataclass(frozen=True)
class TinyModels:
    """Paths to the built models, as the settings name them."""

    models_dir: Path
    clip_config: Path
    clip_weights: Path
    yolo_weights: Path
    whisper_dir: Path


def build_tiny_clip(folder: Path) -> tuple[Path, Path]:
    """An open_clip architecture with ViT-B-32's 512-d output but one narrow layer per tower."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
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
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    weights = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), weights)
    return config, weights


def build_tiny_yolo(folder: Path) -> Path:
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


def build_tiny_whisper(folder: Path) -> Path:
    """A one-layer Whisper (transformers, random weights) converted to CTranslate2 int8.

    Its tokenizer is byte-level with Whisper's special tokens at Whisper's own ids
    (fillers stand in for the real BPE merges), written as tokenizer.json beside the model.
    """
    import ctranslate2
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
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=token_id["<|startoftranscript|>"],
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=[eot],
    )
    WhisperForConditionalGeneration(config).save_pretrained(source)
    out = folder / "ct2"
    ctranslate2.converters.TransformersConverter(str(source), copy_files=["tokenizer.json"]).convert(
        str(out), quantization="int8", force=True
    )
    converted = json.loads((out / "config.json").read_text())
    converted["lang_ids"] = [token_id[lang] for lang in languages]
    (out / "config.json").write_text(json.dumps(converted))
    return out


def build_all(models_dir: Path) -> TinyModels:
    """Build every tiny model under `models_dir`."""
    config, clip_weights = build_tiny_clip(models_dir / "clip")
    return TinyModels(
        models_dir=models_dir,
        clip_config=config,
        clip_weights=clip_weights,
        yolo_weights=build_tiny_yolo(models_dir / "yolo"),
        whisper_dir=build_tiny_whisper(models_dir / "whisper"),
    )
