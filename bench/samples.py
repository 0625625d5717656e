"""Synthetic media for tests and benchmarks: images in several formats, audio and video made
with PyAV, and a loopback HTTP server to fetch them from."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

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
    seconds: float,
    *,
    video: bool = True,
    audio: bool = True,
    fmt: str = "mp4",
    fps: int = 10,
    track: np.ndarray | None = None,
) -> bytes:
    """A clip encoded with PyAV: MPEG-4 video (a colour sweep, key frame every second) and AAC audio,
    or PCM in a WAV file: codecs FFmpeg always builds in. The sound is `track` (16 kHz mono
    float32) when given, else a tone of `seconds`."""
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
            samples = ((tone(seconds) if track is None else track) * 32767).astype(np.int16)
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


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """n JPEGs of 640x480 with a few random shapes on a noisy background."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y = int(rng.integers(0, 560)), int(rng.integers(0, 400))
            draw.rectangle((x, y, x + 80, y + 80), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_wavs(n: int, seconds: float, seed: int = 0) -> list[bytes]:
    """n mono 16 kHz WAV clips: a tone in noise."""
    import wave

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.arange(int(seconds * 16_000)) / 16_000
        signal = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.02 * rng.standard_normal(t.size)
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16_000)
            w.writeframes((signal * 32767).astype("<i2").tobytes())
        out.append(buf.getvalue())
    return out


SENTENCES = (
    "My dog loves running on the beach every morning.",
    "The new car has a quiet engine and fast wheels.",
    "We cooked fresh pasta with tomatoes from the garden.",
    "The football match ended with a late goal in the rain.",
    "Our train crossed the mountains before sunrise.",
    "She painted the old boat bright blue for the summer.",
)


def spoken_wavs(n: int, seconds: float) -> list[bytes]:
    """n WAV clips of `seconds` each of English speech from Debian's espeak-ng (22,050 Hz mono;
    130 words a minute with short gaps between words, which Whisper base hears word for word):
    sentences in turn, trimmed to length. FileNotFoundError without espeak-ng."""
    import shutil
    import subprocess
    import wave

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    out = []
    for i in range(n):
        frames, rate, text = b"", 0, ""
        k = i
        while not rate or len(frames) < seconds * rate * 2:
            text = f"{text} {SENTENCES[k % len(SENTENCES)]}"
            k += 1
            spoken = subprocess.run(
                [binary, "--stdout", "-s", "130", "-g", "5", text], check=True, capture_output=True
            ).stdout
            with wave.open(io.BytesIO(spoken)) as w:
                rate, frames = w.getframerate(), w.readframes(w.getnframes())
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(frames[: int(seconds * rate) * 2])
        out.append(buf.getvalue())
    return out


@contextmanager
def media_server(files: dict[str, tuple[bytes, str]]) -> Iterator[str]:
    """Serve `files` (path -> body, content type; read per request, so it may grow) on a
    loopback port, 404 for other paths; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in files:
                self.send_error(404)
                return
            body, content_type = files[self.path]
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
