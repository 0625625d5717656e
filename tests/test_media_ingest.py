"""Image, video and audio posts through the real Celery worker, and cross-modal ranking.

The first tests run the real loaders on tiny random-weight models (shapes and plumbing);
the ranking tests use a stand-in CLIP that maps colours and the words "dog"/"car" to fixed
directions, because random weights carry no meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from PIL.Image import Image

from bench.samples import CAR_BLUE, DOG_BROWN, av_bytes, image_bytes
from feed.ingest import IngestJob
from feed.stores import keys
from feed.stores.post_store import PostStore
from feed.stores.records import PostRecord
from models.clip import ClipEncoder
from tests.conftest import Engine, MediaHost
from tests.helpers import wait_for
from tests.test_e2e import feed, ids, interact
from tests.test_ingest import enqueue, job, state_of


async def record_of(redis_client: Any, key: str) -> PostRecord:
    record = PostRecord.from_values(key, await redis_client.hmget(keys.post(key), PostRecord.fields()))
    assert record is not None
    return record


def media_job(key: str, post_type: str, urls: list[str], caption: str = "") -> IngestJob:
    return msgspec.structs.replace(job(key, caption), post_type=post_type, media_urls=tuple(urls))


def assert_unit(vector: np.ndarray, dim: int) -> None:
    assert vector.shape == (dim,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


async def test_every_post_type_is_understood_by_the_real_loaders(
    celery_worker: Any, redis_client: Any, use_models: Any, tiny_model_set: Any, media_host: MediaHost
) -> None:
    use_models(clip=tiny_model_set.clip, detector=tiny_model_set.detector, speech=tiny_model_set.speech)
    photos = [media_host.add(f"/p{i}.png", image_bytes(DOG_BROWN, seed=i), "image/png") for i in range(2)]
    clip = media_host.add("/clip.mp4", av_bytes(3.0), "video/mp4")
    voice = media_host.add("/voice.wav", av_bytes(2.0, video=False, fmt="wav"), "audio/wav")
    posts = [
        media_job("img", "image", photos, "our dog at the beach"),
        media_job("vid", "video", [clip], "skateboarding trick"),
        media_job("aud", "audio", [voice]),
        job("txt", "a plain text post"),
    ]
    for j in posts:
        await enqueue(celery_worker, redis_client, j)
    for j in posts:
        await wait_for(lambda k=j.key: _is(redis_client, k, "ingested"))

    img = await record_of(redis_client, "img")
    assert img.post_type == "image" and set(img.vectors) == {"text", "image"}
    assert_unit(img.vectors["image"], 512)
    assert_unit(img.vectors["text"], 384)
    assert isinstance(img.tags, dict)
    vid = await record_of(redis_client, "vid")
    assert set(vid.vectors) == {"text", "image"} and vid.language
    aud = await record_of(redis_client, "aud")
    assert aud.language and "image" in aud.vectors  # the transcript went through CLIP's text tower
    txt = await record_of(redis_client, "txt")
    assert set(txt.vectors) == {"text", "image"}
    assert_unit(txt.vectors["image"], 512)


async def test_refused_media_and_missing_weights_fail_only_their_post(
    celery_worker: Any,
    redis_client: Any,
    use_models: Any,
    tiny_model_set: Any,
    media_host: MediaHost,
    tmp_path: Path,
) -> None:
    use_models(clip=ClipEncoder("ViT-B-32", tmp_path / "missing.pt"), detector=tiny_model_set.detector)
    page = media_host.add("/page.html", b"<html></html>", "text/html")
    photo = media_host.add("/ok.png", image_bytes(DOG_BROWN), "image/png")
    posts = [
        media_job("gone", "image", [media_host.url("/nothing.png")]),
        media_job("html", "image", [page]),
        media_job("noclip", "image", [photo]),
        job("words", "text posts do not need CLIP"),
    ]
    for j in posts:
        await enqueue(celery_worker, redis_client, j)
    reasons = {}
    for key in ("gone", "html", "noclip"):
        await wait_for(lambda k=key: _is(redis_client, k, "failed"))
        state = await PostStore(redis_client).state(key)
        assert state is not None and state.error
        reasons[key] = state.error
    assert "404" in reasons["gone"]
    assert "text/html" in reasons["html"]
    assert "CLIP weights not found" in reasons["noclip"] and str(tmp_path / "missing.pt") in reasons["noclip"]
    await wait_for(lambda: _is(redis_client, "words", "ingested"))
    assert set((await record_of(redis_client, "words")).vectors) == {"text"}  # no CLIP: text space only


class ColourClip:
    """Stand-in CLIP: brown pictures and the word "dog" point one way, blue ones and "car" another."""

    DIM = 512

    def _unit(self, values: Sequence[float]) -> np.ndarray:
        v = np.zeros(self.DIM, dtype=np.float32)
        v[: len(values)] = values
        return (v / np.linalg.norm(v)).astype(np.float32)

    def load(self) -> None:
        pass

    def encode_images(self, images: Sequence[Image]) -> np.ndarray:
        means = [np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(axis=0) for im in images]
        return np.stack([self._unit([r, 0.2 * g, b]) for r, g, b in means]).reshape(len(images), self.DIM)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        def direction(text: str) -> list[float]:
            if "dog" in text:
                return [DOG_BROWN[0], 0.2 * DOG_BROWN[1], DOG_BROWN[2]]
            if "car" in text:
                return [CAR_BLUE[0], 0.2 * CAR_BLUE[1], CAR_BLUE[2]]
            return [0.0, 0.0, 0.0, 1.0]

        return np.stack([self._unit(direction(t)) for t in texts]).reshape(len(texts), self.DIM)


class NothingDetected:
    def load(self) -> None:
        pass

    def detect_objects(self, images: Sequence[Image]) -> list[dict[str, int]]:
        return [{} for _ in images]


class SeesDogs:
    def load(self) -> None:
        pass

    def detect_objects(self, images: Sequence[Image]) -> list[dict[str, int]]:
        return [{"dog": 1 + i % 2, "person": 1} for i in range(len(images))]


def test_detected_objects_become_tags_and_join_the_text_minilm_reads(
    use_models: Any, media_host: MediaHost, text_encoder: Any
) -> None:
    analyzer = use_models(clip=ColourClip(), detector=SeesDogs())
    photos = [media_host.add(f"/tags{i}.png", image_bytes(DOG_BROWN, seed=i), "image/png") for i in range(2)]
    clip = media_host.add("/tags.mp4", av_bytes(5.0, audio=False), "video/mp4")
    photo_post, video_post = analyzer.analyze(
        [media_job("p", "image", photos, "Rex at the beach"), media_job("v", "video", [clip])]
    )
    assert photo_post.tags == {"dog": 3, "person": 2}  # two photos: counts add up
    assert video_post.tags == {"dog": 2, "person": 1}  # frames of one video: the most seen at once
    expected = text_encoder.encode_texts(["Rex at the beach\nShows 3 dog, 2 person.", "Shows 2 dog, person."])
    np.testing.assert_allclose(photo_post.vectors["text"], expected[0], atol=1e-5)
    np.testing.assert_allclose(video_post.vectors["text"], expected[1], atol=1e-5)


async def post(engine: Engine, post_id: str, author: str, **body: Any) -> None:
    response = await engine.client.post("/posts", json={"post_id": post_id, "author_id": author, **body})
    assert response.status_code == 202, response.text


async def photo(
    engine: Engine, host: MediaHost, post_id: str, colour: tuple[int, int, int], seed: int
) -> None:
    url = host.add(f"/{post_id}.jpg", image_bytes(colour, "JPEG", seed=seed), "image/jpeg")
    await post(engine, post_id, f"author-{post_id}", post_type="image", media_url=url)  # no caption


async def ingested(engine: Engine, *post_ids: str) -> None:
    for post_id in post_ids:
        await wait_for(lambda p=post_id: _api_state(engine, p, "ingested"))


async def _api_state(engine: Engine, post_id: str, state: str) -> bool:
    response = await engine.client.get(f"/posts/{post_id}")
    return bool(response.status_code == 200 and response.json()["state"] == state)


async def new_photos_ranked_for(engine: Engine, host: MediaHost, user: str) -> list[Any]:
    """Post an uncaptioned dog photo and car photo; the user's feed once Phoenix finds the dog photo."""
    await photo(engine, host, "new-dog", DOG_BROWN, seed=100)
    await photo(engine, host, "new-car", CAR_BLUE, seed=101)
    await ingested(engine, "new-dog", "new-car")

    async def phoenix_has_new_dog() -> dict[str, Any] | None:
        body = await feed(engine, user, limit=50)
        sources = {i["post_id"]: i["source"] for i in body["items"]}
        return body if sources.get("new-dog") == "phoenix" else None

    body = await wait_for(phoenix_has_new_dog)
    return ids(body)


async def test_a_user_who_likes_dog_photos_gets_a_new_dog_photo_above_a_car_photo(
    engine: Engine, use_models: Any, media_host: MediaHost
) -> None:
    use_models(clip=ColourClip(), detector=NothingDetected())
    for i in range(3):
        await photo(engine, media_host, f"dog-{i}", DOG_BROWN, seed=i)
        await photo(engine, media_host, f"car-{i}", CAR_BLUE, seed=10 + i)
    await ingested(engine, *(f"dog-{i}" for i in range(3)), *(f"car-{i}" for i in range(3)))
    for i in range(3):
        await interact(engine, "dog-lover", f"dog-{i}", "like")
    await wait_for(lambda: engine.redis.hexists(keys.user("dog-lover"), "vec:image"))
    assert not await engine.redis.hexists(keys.user("dog-lover"), "vec:text")  # photos had no text

    order = await new_photos_ranked_for(engine, media_host, "dog-lover")
    assert order.index("new-dog") < order.index("new-car")
    assert all(order.index("new-dog") < order.index(f"car-{i}") for i in range(3))


async def test_text_likes_find_photos_through_the_clip_text_tower(
    engine: Engine, use_models: Any, media_host: MediaHost
) -> None:
    use_models(clip=ColourClip(), detector=NothingDetected())
    texts = {"t-dog": "my dog chased a ball in the park", "t-car": "the new car has a quiet engine"}
    for post_id, text in texts.items():
        await post(engine, post_id, f"author-{post_id}", text=text)
    await ingested(engine, *texts)
    await interact(engine, "reader", "t-dog", "like")
    await wait_for(lambda: engine.redis.hexists(keys.user("reader"), "vec:image"))

    order = await new_photos_ranked_for(engine, media_host, "reader")
    assert order.index("new-dog") < order.index("new-car")


async def _is(redis_client: Any, key: str, state: str) -> bool:
    return await state_of(redis_client, key) == state
