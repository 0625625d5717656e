"""Media files made on the fly for tests: images in several formats, and audio/video with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
from PIL import Image

DOG_BROWN = (150, 95, 45)
CAR_BLUE = (35, 70, 200)


def image_bytes(
    color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (96, 64), seed: int = 0
) -> bytes:
    """An image of roughly one colour (a little noise so no two are identical)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-12, 13, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def tone(seconds: float, rate: int = 16_000, hz: float = 440.0) -> np.ndarray:
    """A sine tone, float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def av_bytes(
    seconds: float, *, video: bool = True, audio: bool = True, fmt: str = "mp4", fps: int = 10
) -> bytes:
    """A clip encoded with PyAV: MPEG-4 video (a colour sweep, key frame every second) and AAC audio,
    or PCM in a WAV file: codecs FFmpeg always builds in."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        vstream = astream = None
        if video:
            vstream = out.add_stream("mpeg4", rate=fps)
            vstream.width, vstream.height = 64, 48
            vstream.pix_fmt = "yuv420p"
            vstream.codec_context.gop_size = fps
        if audio:
            astream = out.add_stream("aac" if fmt == "mp4" else "pcm_s16le", rate=16_000)
            astream.layout = "mono"
        if vstream is not None:
            for i in range(int(seconds * fps)):
                shade = int(255 * i / max(seconds * fps, 1))
                frame = av.VideoFrame.from_ndarray(
                    np.full((48, 64, 3), (shade, 80, 160), np.uint8), format="rgb24"
                )
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        if astream is not None:
            samples = (tone(seconds) * 32767).astype(np.int16)
            step = 1024
            for start in range(0, len(samples), step):
                chunk = samples[start : start + step]
                sound = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
                sound.sample_rate = 16_000
                sound.pts = start
                sound.time_base = Fraction(1, 16_000)
                out.mux(astream.encode(sound))
            out.mux(astream.encode(None))
    return buf.getvalue()
