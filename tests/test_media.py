"""Decoding fetched media within limits: formats, pixel bombs, durations, key frames, audio."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.samples import DOG_BROWN, av_bytes, image_bytes
from ingest_workers.fetch import MediaRefused
from ingest_workers.media import MAX_SIDE, decode_av, decode_image

LIMITS: dict[str, Any] = {"max_duration_s": 60.0, "max_pixels": 10**6, "frame_every_s": 2.0, "max_frames": 8}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_images_decode_to_rgb_no_larger_than_max_side(fmt: str) -> None:
    image = decode_image(image_bytes(DOG_BROWN, fmt, (2400, 1200)), max_pixels=10**7)
    assert image.mode == "RGB" and max(image.size) == MAX_SIDE and image.size[0] == 2 * image.size[1]


def test_other_image_formats_and_garbage_are_refused() -> None:
    with pytest.raises(MediaRefused, match="GIF is not JPEG, PNG or WebP"):
        decode_image(image_bytes(DOG_BROWN, "GIF"), 10**7)
    with pytest.raises(MediaRefused, match="undecodable image"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, 10**7)


def test_pixel_bomb_is_refused_from_its_header() -> None:
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 M pixels in a few kB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(MediaRefused, match="144000000 pixels"):  # PIL's own guard trips first here
        decode_image(buf.getvalue(), 40_000_000)
    buf = io.BytesIO()
    Image.new("1", (8_000, 6_000)).save(buf, "PNG")  # under PIL's guard, over ours
    with pytest.raises(MediaRefused, match="8000x6000 = 48000000 pixels, over the limit of 40000000"):
        decode_image(buf.getvalue(), 40_000_000)


def test_video_gives_key_frames_apart_and_its_audio_track() -> None:
    media = decode_av(av_bytes(7.0), want_frames=True, **LIMITS)
    assert media.duration_s == pytest.approx(7.0, abs=0.2)
    assert len(media.frames) == 4  # key frames every 1 s, taken at least 2 s apart: 0, 2, 4, 6
    assert media.audio is not None and media.audio.dtype == np.float32
    assert len(media.audio) / 16_000 == pytest.approx(7.0, abs=0.2)
    capped = decode_av(av_bytes(7.0), want_frames=True, **{**LIMITS, "max_frames": 2})
    assert len(capped.frames) == 2


@pytest.mark.parametrize("fmt", ["wav", "mp4"])
def test_audio_files_decode_to_16khz_mono(fmt: str) -> None:
    media = decode_av(av_bytes(3.0, video=False, fmt=fmt), want_frames=False, **LIMITS)
    assert media.frames == [] and media.audio is not None
    assert len(media.audio) / 16_000 == pytest.approx(3.0, abs=0.1)
    assert 0.1 < float(np.abs(media.audio).max()) <= 1.0


def test_av_refusals() -> None:
    with pytest.raises(MediaRefused, match="over the limit of 2 s"):
        decode_av(av_bytes(5.0), want_frames=True, **{**LIMITS, "max_duration_s": 2.0})
    with pytest.raises(MediaRefused, match="no audio track"):
        decode_av(av_bytes(2.0, audio=False), want_frames=False, **LIMITS)
    with pytest.raises(MediaRefused, match="undecodable media"):
        decode_av(b"not a media file" * 50, want_frames=True, **LIMITS)
    with pytest.raises(MediaRefused, match="pixels, over the limit"):
        decode_av(av_bytes(2.0), want_frames=True, **{**LIMITS, "max_pixels": 1000})
