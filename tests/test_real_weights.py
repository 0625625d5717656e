"""Media understanding with real weights: Whisper base (`scripts/prepare_models.sh
--whisper-base`, MIT) hearing sentences that espeak-ng speaks, through the ingest worker.

Skipped on a machine without the weights or Debian's espeak-ng; CI installs both and sets
REQUIRE_REAL_WEIGHTS, so there a missing one fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

from bench.samples import av_bytes
from feed.config import WHISPER_MODELS, Settings
from feed.stores import keys
from feed.stores.records import PostRecord
from ingest_workers.media import decode_av
from models import whisper_base
from models.files import weights_path
from models.speech import SAMPLE_RATE, SpeechTranscriber
from tests.conftest import Engine, MediaHost
from tests.helpers import wait_for
from tests.test_e2e import feed, ids, interact
from tests.test_ingest import enqueue
from tests.test_media_ingest import ColourClip, NothingDetected, _is, ingested, media_job, post, record_of

REPO = Path(__file__).resolve().parents[1]
DOG = "My dog loves running on the beach every morning."
CAR = "The new car has a quiet engine and fast wheels."


def _missing(what: str) -> NoReturn:
    if os.environ.get("REQUIRE_REAL_WEIGHTS"):
        pytest.fail(f"{what} (REQUIRE_REAL_WEIGHTS is set)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def whisper() -> SpeechTranscriber:
    """Whisper base from MODELS_DIR (the repository's `models_data` by default), loaded once."""
    models_dir = Settings().models_dir
    models_dir = models_dir if models_dir.is_absolute() else REPO / models_dir
    folder = weights_path(models_dir, WHISPER_MODELS["base"])
    if not whisper_base.installed(folder):
        _missing(f"Whisper base is not in {folder} (scripts/prepare_models.sh --whisper-base)")
    model = SpeechTranscriber(folder)
    model.load()
    return model


@pytest.fixture(scope="module")
def speak() -> Any:
    """`speak(sentence)`: WAV bytes of espeak-ng saying it."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        _missing("Debian's espeak-ng is not installed (apt-get install espeak-ng)")

    def say(sentence: str) -> bytes:
        # 130 words a minute with short gaps between words: at espeak's default 175 Whisper base
        # heard "My daughter is running" for "My dog loves running" once the sound was AAC
        speech = [binary, "--stdout", "-s", "130", "-g", "5", sentence]
        return subprocess.run(speech, check=True, capture_output=True).stdout

    return say


def samples(wav: bytes) -> np.ndarray:
    """16 kHz mono float32, as the worker decodes it."""
    decoded = decode_av(
        wav, want_frames=False, max_duration_s=60, max_pixels=1, frame_every_s=1.0, max_frames=0
    )
    assert decoded.audio is not None
    return decoded.audio


def heard(transcript: str, *words: str) -> bool:
    spoken = transcript.lower()
    return all(word in spoken for word in words)


@pytest.fixture
def ingest_heard(
    celery_worker: Any, redis_client: Any, use_models: Any, whisper: SpeechTranscriber, media_host: MediaHost
) -> Any:
    """`await ingest_heard(key, post_type, path, body, content_type)`: the post's record once the
    worker (hearing with Whisper base) ingested the served file."""
    use_models(speech=whisper, clip=ColourClip(), detector=NothingDetected())

    async def ingest(key: str, post_type: str, path: str, body: bytes, content_type: str) -> PostRecord:
        url = media_host.add(path, body, content_type)
        await enqueue(celery_worker, redis_client, media_job(key, post_type, [url]))
        await wait_for(lambda: _is(redis_client, key, "ingested"), timeout=120)
        return await record_of(redis_client, key)

    return ingest


async def test_a_spoken_sentence_becomes_an_english_transcript_with_its_key_words(
    ingest_heard: Any, speak: Any
) -> None:
    record = await ingest_heard("spoken", "audio", "/dog.wav", speak(DOG), "audio/wav")
    assert record.language == "en"
    assert heard(record.transcript, "dog", "running"), record.transcript
    assert "text" in record.vectors  # MiniLM read the transcript


async def test_a_video_with_speech_as_its_sound_track_gets_the_transcript_too(
    ingest_heard: Any, speak: Any
) -> None:
    sound = samples(speak(DOG))
    clip = av_bytes(len(sound) / SAMPLE_RATE, track=sound)  # generated frames, the speech as sound
    record = await ingest_heard("filmed", "video", "/dog.mp4", clip, "video/mp4")
    assert record.language == "en" and set(record.vectors) == {"text", "image"}
    assert heard(record.transcript, "dog", "running"), record.transcript


async def test_a_user_who_liked_dog_texts_gets_the_spoken_dog_post_above_the_spoken_car_post(
    engine: Engine, use_models: Any, whisper: SpeechTranscriber, speak: Any, media_host: MediaHost
) -> None:
    use_models(speech=whisper, clip=ColourClip(), detector=NothingDetected())
    texts = {
        "t-dog": "Our puppy plays fetch in the park and sleeps by the fire.",
        "t-dog2": "Walking the dogs along the river at dawn.",
    }
    for post_id, text in texts.items():
        await post(engine, post_id, f"author-{post_id}", text=text)
    for post_id, sentence in (("a-dog", DOG), ("a-car", CAR)):
        url = media_host.add(f"/{post_id}.wav", speak(sentence), "audio/wav")
        await post(engine, post_id, f"author-{post_id}", post_type="audio", media_url=url)  # no caption
    await ingested(engine, *texts, "a-dog", "a-car")
    for post_id in texts:
        await interact(engine, "dog-reader", post_id, "like")
    await wait_for(lambda: engine.redis.hexists(keys.user("dog-reader"), "vec:text"))

    async def both_audio_posts() -> list[Any] | None:
        order = ids(await feed(engine, "dog-reader", limit=20))
        return order if {"a-dog", "a-car"} <= set(order) else None

    order = await wait_for(both_audio_posts)
    assert order.index("a-dog") < order.index("a-car"), order
