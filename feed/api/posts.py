"""POST /posts, GET /posts/{id}, DELETE /posts/{id}."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from litestar import Controller, Request, delete, get, post
from litestar.exceptions import NotFoundException, ServiceUnavailableException

from feed.api.access import api_key_of
from feed.api.errors import invalid
from feed.api.schemas import MAX_IMAGES, PostAccepted, PostIn, PostStatus
from feed.ids import id_key
from feed.ingest import INGEST_QUEUE, INGEST_TASK, IngestJob
from feed.services import ServicesDep


class PostController(Controller):
    """Posts from the host: accepted for ingest, inspected, deleted."""

    path = "/posts"
    tags = ["posts"]

    @post("/", status_code=202)
    async def add_post(
        self, request: Request[Any, Any, Any], data: PostIn, services: ServicesDep
    ) -> PostAccepted:
        """Accept a post for ingest; its state is `queued` until a worker has stored it (429 over
        the write limits)."""
        media_urls = _media_urls(data)
        await services.limits.check(api_key_of(request), ("author_id", id_key(data.author_id)))
        key = id_key(data.post_id)
        created = data.created_at.timestamp() if data.created_at else time.time()
        job = IngestJob(
            key=key,
            post_id=data.post_id,
            author_id=data.author_id,
            author_key=id_key(data.author_id),
            created_at=created,
            post_type=data.post_type,
            text=data.text or "",
            media_urls=media_urls,
            accepted_at=time.time(),
        )
        task_id = uuid.uuid4().hex
        await services.posts.mark_queued(key, task_id)
        try:
            await asyncio.to_thread(
                services.celery.send_task,
                INGEST_TASK,
                args=[job.to_dict()],
                task_id=task_id,
                queue=INGEST_QUEUE,
            )
        except Exception as exc:
            await services.posts.forget(key, task_id)
            raise ServiceUnavailableException(
                detail="ingest queue unavailable, retry later", headers={"Retry-After": "1"}
            ) from exc
        return PostAccepted(post_id=data.post_id, task_id=task_id, state="queued")

    @get("/{post_id:str}")
    async def get_post(self, post_id: str, services: ServicesDep) -> PostStatus:
        """The post's ingest state; 404 for a post id the engine never accepted."""
        return await _status(services, post_id)

    @delete("/{post_id:str}", status_code=200)
    async def delete_post(
        self, request: Request[Any, Any, Any], post_id: str, services: ServicesDep
    ) -> PostStatus:
        """Remove the post from feeds, timelines and the vector index (429 over the key's write limit)."""
        await services.limits.check(api_key_of(request))
        if not await services.posts.delete(post_id):
            raise NotFoundException(detail=f"post_id: unknown post {post_id!r}")
        return await _status(services, post_id)


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


async def _status(services: ServicesDep, post_id: str) -> PostStatus:
    state = await services.posts.state(post_id)
    if state is None:
        raise NotFoundException(detail=f"post_id: unknown post {post_id!r}")
    return PostStatus(
        post_id=post_id,
        state=state.state,
        error=state.error,
        task_id=state.task_id,
        updated_at=state.updated_at,
    )
