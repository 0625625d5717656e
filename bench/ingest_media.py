"""Ingest benchmark: images/s, audio-seconds/s and text posts/s through the real Celery worker,
against the bare model calls on the same inputs, in one run.

    python -m bench.ingest_media [--images 48] [--audio-clips 6] [--audio-seconds 10] [--texts 256]
                                 [--models-dir DIR] [--whisper DIR]

Without `--models-dir` (a folder prepared by scripts/prepare_models.sh) it builds full-size
models with random weights (ViT-B-32, YOLOv8n, a Whisper with tiny's dimensions): the same
compute as the trained ones, except that a random Whisper never stops on its own, so its
output is capped (WHISPER_MAX_NEW_TOKENS) at what speech gives: about 3.5 tokens a second.
`--whisper` transcribes with that real Whisper instead (a CTranslate2 folder, or `base`:
MODELS_DIR's, from `scripts/prepare_models.sh --whisper-base`), uncapped, and the audio clips
are then English speech from espeak-ng (`bench.samples.spoken_wavs`) rather than tones.

"Through the worker": a `feed-worker` process on its own Redis server fetches every file
from a local HTTP server, decodes it, runs the models in batches and commits the post; the
time runs from the first task sent to the last post ingested. "Bare": the same model calls
in this process on already-decoded inputs, as one batch. Prints one table, the shape of one
indexed point per post type (read back from a Qdrant Edge shard), and writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.samples import av_bytes, make_images, make_wavs, media_server, spoken_wavs

RESULTS = Path(__file__).parent / "results"


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
        from feed.ingest import INGEST_QUEUE, INGEST_TASK
        from feed.stores import keys
        from ingest_workers.celery_app import app

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
    from feed.stores.index.edge import EdgeVectorIndex

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
    parser.add_argument("--whisper", help="a real Whisper: a CTranslate2 folder, or base (MODELS_DIR's)")
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
        weights = "random (full-size architectures)"
        if args.whisper is None:
            env_models["WHISPER_MAX_NEW_TOKENS"] = str(int(3.5 * min(args.audio_seconds, 30.0)))
            weights += f"; Whisper capped at {env_models['WHISPER_MAX_NEW_TOKENS']} tokens per window"
    else:
        env_models = {"MODELS_DIR": str(args.models_dir.resolve())}
        weights = f"prepared in {args.models_dir}"
    if args.whisper is not None:
        from feed.config import Settings
        from models.files import weights_path

        models_dir = (args.models_dir or Settings().models_dir).resolve()
        real = weights_path(models_dir, Settings(whisper_model=args.whisper).whisper_model)
        env_models["WHISPER_MODEL"] = str(real)
        weights += f"; Whisper: {real} (real weights, uncapped; the clips are espeak-ng speech)"
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
    from feed.ingest import IngestJob

    settings = get_settings()
    images = make_images(args.images)
    wavs = (spoken_wavs if args.whisper else make_wavs)(args.audio_clips, args.audio_seconds)
    texts = [f"post {i}: notes on cooking, travel and football, part {i % 17}" for i in range(args.texts)]
    files = {f"/i{i}.jpg": (b, "image/jpeg") for i, b in enumerate(images)}
    files |= {f"/a{i}.wav": (b, "audio/wav") for i, b in enumerate(wavs)}
    files["/v0.mp4"] = (av_bytes(6.0), "video/mp4")  # one video, untimed: its indexed point is shown
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
                worker.run(jobs("video", [(f"{base}/v0.mp4", "a skateboard trick at the park")]))
            finally:
                worker.stop()
        points = sample_points(
            settings.redis_url,
            ["text0", "image0", "audio0", "video0"],
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
