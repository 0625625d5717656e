"""POST /posts, GET /posts/{id}, DELETE /posts/{id}."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from litestar import Controller, Request, delete, get, post
from litestar.di import Provide
from litestar.exceptions import NotFoundException

from feed.api.access import api_key_of
from feed.api.errors import invalid
from feed.api.schemas import MAX_IMAGES, PostAccepted, PostIn, PostStatus
from feed.ids import id_key
from feed.ingest import IngestJob
from feed.services import ServicesDep
from feed.usecases import PostIntake


def _intake(services: ServicesDep) -> PostIntake:
    return services.post_intake


class PostController(Controller):
    """Posts from the host: accepted for ingest, inspected, deleted."""

    path = "/posts"
    tags = ["posts"]
    dependencies = {"intake": Provide(_intake, sync_to_thread=False)}

    @post("/", status_code=202)
    async def add_post(
        self, request: Request[Any, Any, Any], data: PostIn, intake: PostIntake
    ) -> PostAccepted:
        """Accept a post for ingest; its state is `queued` until a worker has stored it (429 over
        the write limits, 503 while the ingest queue is away)."""
        job = IngestJob(
            key=id_key(data.post_id),
            post_id=data.post_id,
            author_id=data.author_id,
            author_key=id_key(data.author_id),
            created_at=data.created_at.timestamp() if data.created_at else time.time(),
            post_type=data.post_type,
            text=data.text or "",
            media_urls=_media_urls(data),
            accepted_at=time.time(),
        )
        task_id = await intake.accept(api_key_of(request), job)
        return PostAccepted(post_id=data.post_id, task_id=task_id, state="queued")

    @get("/{post_id:str}")
    async def get_post(self, post_id: str, intake: PostIntake) -> PostStatus:
        """The post's ingest state; 404 for a post id the engine never accepted."""
        return await _status(intake, post_id)

    @delete("/{post_id:str}", status_code=200)
    async def delete_post(
        self, request: Request[Any, Any, Any], post_id: str, intake: PostIntake
    ) -> PostStatus:
        """Remove the post from feeds, timelines and the vector index (429 over the key's write limit)."""
        if not await intake.delete(api_key_of(request), post_id):
            raise NotFoundException(detail=f"post_id: unknown post {post_id!r}")
        return await _status(intake, post_id)


def _media_urls(data: PostIn) -> tuple[str, ...]:
    """The post's media URLs, checked against its type (400 naming the field otherwise)."""
    urls = [*([data.media_url] if data.media_url else []), *(data.media_urls or [])]
    if data.post_type == "text":
        if urls:
            raise invalid("media_url", "a text post has no media; use post_type image, video or audio")
        if data.text is None or not data.text.strip():
            raise invalid("text", "a text post needs non-empty text")
        return ()
    field = "media_urls" if data.media_urls else "media_url"
    if not urls:
        raise invalid("media_url", f"an {data.post_type} post needs a media_url")
    if data.post_type == "image" and len(urls) > MAX_IMAGES:
        raise invalid(field, f"at most {MAX_IMAGES} images per post")
    if data.post_type != "image" and len(urls) > 1:
        raise invalid(field, f"a {data.post_type} post takes one media_url")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid(field, f"{url!r} is not an http(s) URL with a host")
        if parts.username or parts.password:
            raise invalid(field, "credentials in the URL are not accepted")
    return tuple(urls)


async def _status(intake: PostIntake, post_id: str) -> PostStatus:
    state = await intake.state(post_id)
    if state is None:
        raise NotFoundException(detail=f"post_id: unknown post {post_id!r}")
    return PostStatus(
        post_id=post_id,
        state=state.state,
        error=state.error,
        task_id=state.task_id,
        updated_at=state.updated_at,
    )
