"""Understanding a batch of posts: fetch and decode their media, then run each model once per batch.

For a batch of jobs, `PostAnalyzer.analyze`:
1. fetches and decodes every media URL of every post in a thread pool (I/O and
   decoding overlap; PIL and PyAV release the GIL while decoding);
2. runs CLIP and YOLO once over all images and video key frames of the batch;
3. runs Whisper over the audio tracks;
4. runs MiniLM once over the texts, where a post's text is its caption, its transcript
   and its detected objects, so text-only interests match pictures and recordings;
5. runs CLIP's text tower over the posts without pictures (when CLIP is available), so
   image-space interests reach them too.

A post whose media is refused or whose model is missing gets a `Failed` with the
reason (`transient` when a later retry may succeed); the others in the batch go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import structlog
from PIL.Image import Image

from feed.config import Settings
from feed.ingest import IngestJob
from feed.stores.records import IMAGE, TEXT
from ingest_workers.fetch import MediaFetcher, MediaRefused, MediaUnavailable
from ingest_workers.media import AUDIO_TYPES, IMAGE_TYPES, VIDEO_TYPES, AVMedia, decode_av, decode_image
from models.files import ModelUnavailable
from models.registry import ModelSet

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failed:
    """Why a post could not be ingested; `transient` failures may be retried."""

    reason: str
    transient: bool = False


@dataclass(slots=True)
class Understood:
    """What the models made of a post."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    transcript: str = ""
    language: str = ""


@dataclass(slots=True)
class _Post:
    job: IngestJob
    images: list[Image] = field(default_factory=list)
    audio: np.ndarray | None = None
    failed: Failed | None = None
    out: Understood = field(default_factory=Understood)


class PostAnalyzer:
    """Turns ingest jobs into vectors, tags and transcripts (see the module docstring)."""

    def __init__(self, models: ModelSet, fetcher: MediaFetcher, settings: Settings) -> None:
        self.models = models
        self._fetcher = fetcher
        self._settings = settings
        self._pool = ThreadPoolExecutor(settings.media_fetch_threads, thread_name_prefix="media")

    def close(self) -> None:
        """Stop the fetch pool and close the HTTP client."""
        self._pool.shutdown(wait=True)
        self._fetcher.close()

    def analyze(self, jobs: Sequence[IngestJob]) -> list[Understood | Failed]:
        """One result per job, in order. Model errors other than missing weights propagate."""
        posts = [_Post(job) for job in jobs]
        self._load_media(posts)
        self._run_image_models([p for p in posts if p.images and not p.failed])
        self._run_speech([p for p in posts if p.audio is not None and not p.failed])
        self._run_text_models([p for p in posts if not p.failed])
        return [p.failed or p.out for p in posts]

    # -- media -------------------------------------------------------------------------------

    def _load_media(self, posts: list[_Post]) -> None:
        work = [(p, url) for p in posts for url in p.job.media_urls]
        for (post, _), result in zip(work, self._pool.map(self._fetch_decode, work), strict=True):
            if isinstance(result, Failed):
                post.failed = post.failed or result
            elif isinstance(result, AVMedia):
                post.images.extend(result.frames)
                post.audio = result.audio if result.audio is not None and result.audio.size else None
            else:
                post.images.append(result)

    def _fetch_decode(self, item: tuple[_Post, str]) -> Image | AVMedia | Failed:
        post, url = item
        s = self._settings
        kind = post.job.post_type
        if kind == "image":
            accept, max_bytes = IMAGE_TYPES, s.media_max_image_bytes
        else:
            accept, max_bytes = (VIDEO_TYPES if kind == "video" else AUDIO_TYPES), s.media_max_av_bytes
        try:
            fetched = self._fetcher.fetch(url, accept=accept, max_bytes=max_bytes)
        except MediaRefused as exc:
            return Failed(str(exc))
        except MediaUnavailable as exc:
            return Failed(str(exc), transient=True)
        try:
            if kind == "image":
                return decode_image(fetched.data, s.media_max_image_pixels)
            return decode_av(
                fetched.data,
                want_frames=kind == "video",
                max_duration_s=s.media_max_duration_s,
                max_pixels=s.media_max_image_pixels,
                frame_every_s=s.media_frame_every_s,
                max_frames=s.media_max_frames,
            )
        except MediaRefused as exc:
            return Failed(f"media_url {url}: {exc}")
        except ModelUnavailable as exc:
            return Failed(str(exc))

    # -- models ------------------------------------------------------------------------------

    def _run_image_models(self, posts: list[_Post]) -> None:
        if not posts:
            return
        images = [im for p in posts for im in p.images]
        vectors = _or_fail(posts, lambda: self.models.clip.encode_images(images))
        tags = _or_fail(posts, lambda: self.models.detector.detect_objects(images))
        if vectors is None or tags is None:
            return
        start = 0
        for post in posts:  # each post's images are contiguous in the batch
            end = start + len(post.images)
            post.out.vectors[IMAGE] = _unit(vectors[start:end].mean(axis=0))
            post.out.tags = _merge_tags(tags[start:end], video=post.job.post_type == "video")
            start = end

    def _run_speech(self, posts: list[_Post]) -> None:
        if not posts:
            return
        audios = [p.audio for p in posts if p.audio is not None]
        transcripts = _or_fail(posts, lambda: self.models.speech.transcribe(audios))
        for post, t in zip(posts, transcripts or [], strict=False):
            post.out.transcript = t.text[: self._settings.transcript_chars]
            post.out.language = t.language

    def _run_text_models(self, posts: list[_Post]) -> None:
        texts = {id(p): _text_of(p) for p in posts}
        with_text = [p for p in posts if texts[id(p)]]
        if with_text:
            vectors = _or_fail(
                with_text, lambda: self.models.text.encode_texts([texts[id(p)] for p in with_text])
            )
            for post, vector in zip(with_text, vectors if vectors is not None else [], strict=False):
                post.out.vectors[TEXT] = vector
        if not self._settings.clip_for_text_posts:
            return
        no_pictures = [p for p in with_text if IMAGE not in p.out.vectors and not p.failed]
        if no_pictures:
            try:
                clip_vectors = self.models.clip.encode_texts([texts[id(p)] for p in no_pictures])
            except ModelUnavailable as exc:  # optional for posts without pictures
                log.debug("clip_text_skipped", reason=str(exc))
                return
            for post, vector in zip(no_pictures, clip_vectors, strict=True):
                post.out.vectors[IMAGE] = vector


def _or_fail(posts: list[_Post], run: Callable[[], T]) -> T | None:
    """Run a model call for `posts`; on missing weights mark them all failed and return None."""
    try:
        return run()
    except ModelUnavailable as exc:
        for post in posts:
            post.failed = post.failed or Failed(str(exc))
        return None


def _text_of(post: _Post) -> str:
    """What MiniLM reads: caption, then transcript, then the detected objects."""
    parts = [post.job.text.strip(), post.out.transcript]
    if post.out.tags:
        parts.append(
            "Shows "
            + ", ".join(f"{n} {name}" if n > 1 else name for name, n in sorted(post.out.tags.items()))
            + "."
        )
    return "\n".join(p for p in parts if p)


def _merge_tags(per_image: list[dict[str, int]], *, video: bool) -> dict[str, int]:
    """Several photos add up their objects; a video's frames show the same objects again, so take the max."""
    merged: Counter[str] = Counter()
    for tags in per_image:
        if video:
            merged |= Counter(tags)
        else:
            merged += Counter(tags)
    return dict(merged)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).astype(np.float32)
