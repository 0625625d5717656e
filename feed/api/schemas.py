"""Request and response bodies of the HTTP API (msgspec structs, validated at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from feed.config import MAX_PAGE, Action
from feed.ids import HostId
from feed.metrics import MetricsSummary

MAX_TEXT_CHARS = 20_000
MAX_IMAGES = 4
PostType = Literal["text", "image", "video", "audio"]
MediaUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]  # ISO 8601 with a UTC offset


class PostIn(msgspec.Struct, kw_only=True):
    """A post from the host.

    `text` posts need `text`. `image` posts need `media_url` or `media_urls` (up to 4
    JPEG/PNG/WebP images); `video` and `audio` posts need one `media_url`. For media
    posts `text` is an optional caption. Media URLs must be http(s); the worker fetches
    them and refuses private addresses.
    """

    post_id: HostId
    author_id: HostId
    post_type: PostType = "text"
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)] | None = None
    media_url: MediaUrl | None = None
    media_urls: Annotated[list[MediaUrl], msgspec.Meta(max_length=MAX_IMAGES)] | None = None
    created_at: Timestamp | None = None


class PostAccepted(msgspec.Struct):
    """Answer to an accepted post: it is queued for ingest under `task_id`."""

    post_id: int | str
    task_id: str
    state: str


class PostStatus(msgspec.Struct):
    """Ingest state of a post: queued, ingested, failed (with `error`) or deleted."""

    post_id: str
    state: str
    error: str | None
    task_id: str | None
    updated_at: float


class InteractionIn(msgspec.Struct, kw_only=True):
    """A user's interaction with a post. `event_id` (optional) makes host retries idempotent."""

    user_id: HostId
    post_id: HostId
    action: Action
    author_id: HostId | None = None
    post_type: PostType | None = None
    dwell_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    occurred_at: Timestamp | None = None  # when it happened (backfills); default: when it is received


class InteractionAccepted(msgspec.Struct):
    """The event is durably in the broker and will be applied."""

    event_id: str


class FeedRequest(msgspec.Struct, kw_only=True):
    """Ask for a page of a user's feed; pass the previous `next_cursor` for the next page."""

    user_id: HostId
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 50
    cursor: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[0-9a-f]+$")] | None = None
    explain: bool = False


class FeedItem(msgspec.Struct):
    """A ranked post, where it came from and the parts of its score."""

    post_id: int | str
    author_id: int | str
    score: float
    source: str
    score_parts: dict[str, float]
    # with `explain`, when the learned ranker scored the post: each feature's additive share of
    # its raw model score (SHAP values), and `base`, the model's mean; the score is sigmoid(sum)
    contributions: dict[str, float] | None = None


class RankerOut(msgspec.Struct):
    """Which ranker ordered the page (with `explain`): `learned` (and the model's version),
    `formula` (the hand-set weights: no model deployed yet) or `earlier` (the page continues a
    ranking made before: a later page of a session, or a kept ranking)."""

    kind: str
    version: int | None


class StageOut(msgspec.Struct):
    """How one pipeline component ran (with `explain`)."""

    stage: str
    name: str
    ms: float
    count_in: int
    count_out: int
    status: str
    error: str | None = None


class FeedResponse(msgspec.Struct):
    """A page of the feed."""

    user_id: int | str
    items: list[FeedItem]
    next_cursor: str | None
    took_ms: float
    stages: list[StageOut] | None = None
    ranker: RankerOut | None = None


class Health(msgspec.Struct):
    """Liveness, and which API process answered: its slot among those sharing DATA_DIR, and
    its process id."""

    status: str
    replica: int
    pid: int


class Readiness(msgspec.Struct):
    """Whether this process can serve: each dependency's state (`ok`, or what went wrong)."""

    ready: bool
    checks: dict[str, str]


class PreviewItem(msgspec.Struct):
    """A post of an operator's feed preview: the feed item and what the post is."""

    post_id: int | str
    author_id: int | str
    score: float
    source: str
    score_parts: dict[str, float]
    post_type: str | None  # None: the record is gone (deleted meanwhile)
    text: str | None
    tags: dict[str, int]


class FeedPreview(msgspec.Struct):
    """A user's feed as an operator sees it: ranked afresh, every stage's report, nothing
    recorded (no impressions, no session, no ranking kept)."""

    user_id: str
    items: list[PreviewItem]
    stages: list[StageOut]
    took_ms: float


class Overview(msgspec.Struct):
    """The operator page's live figures: this API's metrics (all its processes) and the
    answering process's catalogue."""

    replica: int
    pid: int
    posts: int  # in the answering process's catalogue
    metrics: MetricsSummary
