"""Ingest benchmark: images/s, audio-seconds/s and text posts/s through the real Celery worker,
against the bare model calls on the same inputs, in one run.

    python -m bench.ingest_media [--images 48] [--audio-clips 6] [--audio-seconds 10] [--texts 256]
                                 [--models-dir DIR]

Without `--models-dir` (a folder prepared by scripts/prepare_models.sh) it builds full-size
models with random weights (ViT-B-32, YOLOv8n, a Whisper with tiny's dimensions): the same
compute as the trained ones, except that a random Whisper never stops on its own, so its
output is capped (WHISPER_MAX_NEW_TOKENS) at what speech gives: about 3.5 tokens a second.

"Through the worker": a `feed-worker` process on its own Redis server fetches every file
from a local HTTP server, decodes it, runs the models in batches and commits the post; the
time runs from the first task sent to the last post ingested. "Bare": the same model calls
in this process on already-decoded inputs, as one batch. Prints one table, the shape of one
indexed point per post type (read back from a Qdrant Edge shard), and writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

RESULTS = Path(__file__).parent / "results"


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


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bare(settings: Any, images: list[bytes], wavs: list[bytes], texts: list[str]) -> dict[str, float]:
    """Seconds for the model calls the worker makes per input kind, on already-decoded inputs
    (after one warm-up call each): images: CLIP image tower and YOLO; audio: Whisper, then MiniLM
    and CLIP's text tower on the transcripts; texts: MiniLM and CLIP's text tower."""
    from ingest_workers.media import decode_av, decode_image
    from models.registry import load_model_set

    models = load_model_set(settings)
    decoded = [decode_image(b, settings.media_max_image_pixels) for b in images]
    audios = [
        decode_av(
            w, want_frames=False, max_duration_s=3600.0, max_pixels=10**8, frame_every_s=1.0, max_frames=1
        ).audio
        for w in wavs
    ]
    clips = [a for a in audios if a is not None]
    models.clip.encode_images(decoded[:1])
    models.detector.detect_objects(decoded[:1])
    models.speech.transcribe([clips[0][:16_000]])
    models.text.encode_texts(texts[:1])
    models.clip.encode_texts(texts[:1])

    def text_towers(batch: list[str]) -> None:
        models.text.encode_texts(batch)
        if settings.clip_for_text_posts:
            models.clip.encode_texts(batch)

    def speech() -> None:
        text_towers([t.text for t in models.speech.transcribe(clips)])

    return {
        "images": timed(lambda: models.clip.encode_images(decoded))
        + timed(lambda: models.detector.detect_objects(decoded)),
        "audio": timed(speech),
        "texts": timed(lambda: text_towers(texts)),
        "texts, MiniLM alone": timed(lambda: models.text.encode_texts(texts)),
    }


class Worker:
    """A `feed-worker` process and the client side of its queue."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("w")
        exe = Path(sys.executable).with_name("feed-worker")
        self.proc = subprocess.Popen([str(exe)], env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while " ready." not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {log}")
            time.sleep(0.2)

    def run(self, jobs: list[Any]) -> tuple[float, int]:
        """Send the jobs, wait until every post is ingested or failed; (seconds, failures)."""
        import redis

        from feed.config import get_settings
        from feed.stores import keys
        from ingest_workers.celery_app import INGEST_QUEUE, INGEST_TASK, app

        r = redis.Redis.from_url(get_settings().redis_url)
        start = time.perf_counter()
        for job in jobs:
            task_id = uuid.uuid4().hex
            r.hset(keys.post_state(job.key), mapping={"state": "queued", "task_id": task_id})
            app.send_task(INGEST_TASK, args=[job.to_dict()], task_id=task_id, queue=INGEST_QUEUE)
        waiting = [job.key for job in jobs]
        failed = 0
        while waiting:
            time.sleep(0.1)  # one pipelined poll per 100 ms keeps this process off the worker's cores
            pipe = r.pipeline(transaction=False)
            for key in waiting:
                pipe.hget(keys.post_state(key), "state")
            states = pipe.execute()
            failed += sum(state == b"failed" for state in states)
            waiting = [
                k for k, state in zip(waiting, states, strict=True) if state not in (b"ingested", b"failed")
            ]
        return time.perf_counter() - start, failed

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self._log.close()


def sample_points(redis_url: str, post_keys: list[str], dims: dict[str, int], folder: Path) -> dict[str, Any]:
    """Index the given posts into a fresh Edge shard and read their points back."""
    import asyncio

    from redis.asyncio import Redis

    from feed.ids import point_id
    from feed.stores.feature_store import FeatureStore
    from feed.stores.vectors import EdgeVectorIndex

    async def run() -> dict[str, Any]:
        client = Redis.from_url(redis_url)
        records = await FeatureStore(client).posts(post_keys)
        await client.aclose()
        index = EdgeVectorIndex(folder, dims)
        await index.upsert(list(records.values()))
        points = index._shard.retrieve([point_id(k) for k in post_keys], with_payload=True, with_vector=True)
        await index.close()
        out = {}
        for key, point in zip(post_keys, points, strict=True):
            payload = dict(point.payload or {})
            for field in ("text", "transcript"):
                if isinstance(payload.get(field), str) and len(payload[field]) > 60:
                    payload[field] = payload[field][:60] + "..."
            vectors: dict[str, Any] = point.vector if isinstance(point.vector, dict) else {}
            out[records[key].post_type] = {
                "vectors": {
                    name: f"{len(v)}-d, norm {np.linalg.norm(np.asarray(v)):.3f}"
                    for name, v in vectors.items()
                },
                "payload": payload,
            }
        return out

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--audio-clips", type=int, default=6)
    parser.add_argument("--audio-seconds", type=float, default=10.0)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--models-dir", type=Path, help="prepared real weights (default: random full-size)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    from feed.redis_server import free_port, start_server
    from models.files import offline

    offline()
    port = free_port()
    server = start_server(port, work / "redis", appendonly=False)
    env_models: dict[str, str] = {}
    if args.models_dir is None:
        from models.random_weights import build_all

        built = build_all(work / "models", tiny=False)
        env_models = {k.upper(): str(v) for k, v in built.settings().items() if v is not None}
        env_models["WHISPER_MAX_NEW_TOKENS"] = str(int(3.5 * min(args.audio_seconds, 30.0)))
        cap = env_models["WHISPER_MAX_NEW_TOKENS"]
        weights = f"random (full-size architectures; Whisper capped at {cap} tokens per window)"
    else:
        env_models = {"MODELS_DIR": str(args.models_dir.resolve())}
        weights = f"prepared in {args.models_dir}"
    os.environ.update(
        {
            **env_models,
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "MEDIA_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "LOG_LEVEL": "WARNING",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    from feed.config import get_settings
    from ingest_workers.jobs import IngestJob

    settings = get_settings()
    images = make_images(args.images)
    wavs = make_wavs(args.audio_clips, args.audio_seconds)
    texts = [f"post {i}: notes on cooking, travel and football, part {i % 17}" for i in range(args.texts)]
    files = {f"/i{i}.jpg": (b, "image/jpeg") for i, b in enumerate(images)}
    files |= {f"/a{i}.wav": (b, "audio/wav") for i, b in enumerate(wavs)}
    try:
        with media_server(files) as base:
            worker = Worker(dict(os.environ), work / "worker.log")
            try:
                seconds_bare = bare(settings, images, wavs, texts)

                def jobs(kind: str, items: list[tuple[str, str]]) -> list[IngestJob]:
                    now = time.time()
                    return [
                        IngestJob(
                            f"{kind}{i}", f"{kind}{i}", "a", "a", now, kind, text, (url,) if url else ()
                        )
                        for i, (url, text) in enumerate(items)
                    ]

                through: dict[str, tuple[float, int]] = {
                    "texts": worker.run(jobs("text", [("", t) for t in texts])),
                    "images": worker.run(
                        jobs("image", [(f"{base}/i{i}.jpg", "") for i in range(args.images)])
                    ),
                    "audio": worker.run(
                        jobs("audio", [(f"{base}/a{i}.wav", "") for i in range(args.audio_clips)])
                    ),
                }
            finally:
                worker.stop()
        points = sample_points(
            settings.redis_url,
            ["text0", "image0", "audio0"],
            {"text": 384, "image": settings.clip_dim},
            work / "qdrant",
        )
    finally:
        server.terminate()
        server.wait(timeout=10)

    audio_total = args.audio_clips * args.audio_seconds
    units = {
        "images": (args.images, "images/s"),
        "audio": (audio_total, "audio-s/s"),
        "texts": (args.texts, "posts/s"),
    }
    rows = []
    minilm_line = f"bare MiniLM alone: {args.texts / seconds_bare['texts, MiniLM alone']:.1f} posts/s"
    for name, (amount, unit) in units.items():
        worker_s, failed = through[name]
        rows.append(
            {
                "input": name,
                "amount": amount,
                "unit": unit,
                "bare": amount / seconds_bare[name],
                "worker": amount / worker_s,
                "ratio": seconds_bare[name] / worker_s,
                "failed": failed,
            }
        )
    machine = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": __import__("torch").__version__,
        "weights": weights,
        "ingest_batch_size": settings.ingest_batch_size,
    }
    print(f"\ningest benchmark ({machine['cpus']} CPUs, {machine['machine']}, torch {machine['torch']})")
    print(f"weights: {weights}")
    print("| input | amount | bare model calls | through the worker | worker / bare | failed |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['input']} | {row['amount']:g} | {row['bare']:.1f} {row['unit']} | "
            f"{row['worker']:.1f} {row['unit']} | {row['ratio']:.2f}x | {row['failed']} |"
        )
    print(f"({minilm_line}; texts also go through CLIP's text tower: CLIP_FOR_TEXT_POSTS)")
    print("\nindexed points (read back from a Qdrant Edge shard):")
    print(json.dumps(points, indent=2))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"ingest_media-{stamp}.json"
    minilm = {"unit": "posts/s", "bare": args.texts / seconds_bare["texts, MiniLM alone"]}
    out.write_text(
        json.dumps({"machine": machine, "rows": rows, "minilm_alone": minilm, "points": points}, indent=2)
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
