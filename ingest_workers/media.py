"""Decoding fetched media within limits: images, and audio/video (audio track and key frames).

Every refusal raises `MediaRefused` with a reason for the post's `error`. The limits
guard the worker against decompression bombs: an image's pixel count is checked from
its header before any pixel is decoded, and audio is decoded only up to the maximum
duration, whatever the container claims.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ingest_workers.fetch import MediaRefused
from models.files import import_media
from models.speech import SAMPLE_RATE

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
VIDEO_TYPES = frozenset({"video/", "application/octet-stream"})
AUDIO_TYPES = frozenset({"audio/", "application/ogg", "application/octet-stream"})
_IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
MAX_SIDE = 1024  # decoded images are shrunk to this; the encoders look at 224-640 px


@dataclass(frozen=True, slots=True)
class AVMedia:
    """A decoded audio or video file: 16 kHz mono audio (None without an audio track) and key frames."""

    audio: np.ndarray | None
    frames: list[Image.Image]
    duration_s: float


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """An RGB image at most MAX_SIDE on its longer side; JPEG, PNG or WebP only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in _IMAGE_FORMATS:
                raise MediaRefused(f"image format {image.format} is not JPEG, PNG or WebP")
            _check_pixels(*image.size, max_pixels)
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
            rgb = image.convert("RGB")
    except MediaRefused:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise MediaRefused(f"undecodable image: {exc}") from exc
    rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    return rgb


def decode_av(
    data: bytes,
    *,
    want_frames: bool,
    max_duration_s: float,
    max_pixels: int,
    frame_every_s: float,
    max_frames: int,
) -> AVMedia:
    """Audio track (resampled to 16 kHz mono) and, with `want_frames`, up to `max_frames` key
    frames at least `frame_every_s` apart. Refused: undecodable, longer than `max_duration_s`,
    frames over `max_pixels`, nothing usable (no audio, and no video when frames are wanted)."""
    av = import_media("av")
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            duration = _duration(container)
            if duration is not None and duration > max_duration_s:
                raise MediaRefused(
                    f"media is {duration:.0f} s long, over the limit of {max_duration_s:.0f} s"
                )
            has_video = want_frames and bool(container.streams.video)
            if not container.streams.audio and not has_video:
                raise MediaRefused("no audio track" if not want_frames else "no audio or video track")
            frames = (
                _key_frames(container, max_duration_s, max_pixels, frame_every_s, max_frames)
                if has_video
                else []
            )
        audio = _audio(av, data, max_duration_s)
    except MediaRefused:
        raise
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise MediaRefused(f"undecodable media: {exc}") from exc
    seconds = duration if duration is not None else (len(audio) / SAMPLE_RATE if audio is not None else 0.0)
    return AVMedia(audio, frames, seconds)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaRefused(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )


def _duration(container: Any) -> float | None:
    if container.duration:
        return float(container.duration) / 1_000_000  # microseconds (av.time_base)
    known = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(known) if known else None


def _key_frames(
    container: Any, max_duration_s: float, max_pixels: int, every_s: float, max_frames: int
) -> list[Image.Image]:
    stream = container.streams.video[0]
    _check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels)
    stream.codec_context.skip_frame = "NONKEY"  # decode key frames only
    frames: list[Image.Image] = []
    next_t = 0.0
    for frame in container.decode(stream):
        t = float(frame.time or 0.0)
        if t > max_duration_s:
            raise MediaRefused(f"video runs past the limit of {max_duration_s:.0f} s")
        if t + 1e-6 >= next_t:
            _check_pixels(frame.width, frame.height, max_pixels)
            image = frame.to_image()
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            frames.append(image)
            next_t = t + every_s
            if len(frames) >= max_frames:
                break
    return frames


def _audio(av: Any, data: bytes, max_duration_s: float) -> np.ndarray | None:
    """Decode and resample the first audio track, stopping with a refusal past the limit."""
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        limit = int(max_duration_s * SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                total += chunk.size
                if total > limit:
                    raise MediaRefused(f"audio runs past the limit of {max_duration_s:.0f} s")
                chunks.append(chunk)
        for out in resampler.resample(None):  # flush
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return (np.concatenate(chunks).astype(np.float32) / 32768.0).astype(np.float32)
