"""Request and response bodies of the HTTP API (msgspec structs, validated at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from feed.api.metrics_summary import MetricsSummary
from feed.config import MAX_PAGE, Action
from feed.ids import HostId

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
    # each feature's additive share of the learned ranker's raw score, and `base` (as FeedItem's
    # with `explain`); empty when the model did not score it (the formula ranked the page)
    contributions: dict[str, float]


class FeedPreview(msgspec.Struct):
    """A user's feed as an operator sees it: ranked afresh, every stage's report, nothing
    recorded (no impressions, no session, no ranking kept)."""

    user_id: str
    items: list[PreviewItem]
    stages: list[StageOut]
    took_ms: float
    ranker: RankerOut


class ServingRanker(msgspec.Struct):
    """The ranker serving in the answering process: `learned` (the model's version and when its
    training started, epoch s) or `formula` (the hand-set weights: no model deployed yet)."""

    kind: str
    version: int | None
    trained_at: float | None


class TrainingOut(msgspec.Struct, kw_only=True):
    """One training of the learned ranker as its report keeps it (feed/batch/ranker.py
    `TrainingReport`; times in epoch s): deployed or not and why, its data, its validation."""

    version: int
    started_at: float
    seconds: float
    deployed: bool
    reason: str
    events: int  # interactions in the log it read
    posts: int
    train_groups: int
    train_rows: int
    validation_groups: int
    validation_rows: int
    served_train_groups: int = 0  # of the groups, those from logged served pages (older reports: 0)
    served_validation_groups: int = 0
    # NDCG@10 on the validation groups of `formula`, `current` (the model serving before, if
    # any) and `new`; empty when there were too few groups to train
    ndcg_at_10: dict[str, float]
    trees: int = 0
    # the near-duplicate suppression strength its validation chose (None: no model fitted)
    near_duplicate_strength: float | None = None


class ImportanceOut(msgspec.Struct):
    """The newest trained model's feature importance, whether it was deployed or not."""

    version: int
    deployed: bool
    shares: dict[str, float]  # feature -> share of the total split gain, largest first (the top ones)


class ScheduleOut(msgspec.Struct):
    """The batch layer's retrain bookkeeping (times in epoch s; None: never)."""

    applied: int  # interactions the event consumers have applied
    new_events: int  # of those, applied since the last successful training started
    last_started_at: float | None  # the last training's start, whatever its outcome
    last_finished_at: float | None
    last_outcome: str | None  # ok, failed
    last_error: str | None
    last_trained_at: float | None  # the last successful training's start
    running: bool  # a retrain holds the batch lock now


class RankerOverview(msgspec.Struct):
    """The learned ranker: what serves in the answering process, the version deployed in Redis
    (0: none; each process loads a new one within seconds), the newest trainings (newest first),
    the newest model's feature importance (None: no training fitted one) and the retrain schedule."""

    serving: ServingRanker
    deployed_version: int
    trainings: list[TrainingOut]
    importance: ImportanceOut | None
    schedule: ScheduleOut


class Overview(msgspec.Struct):
    """The operator page's live figures: this API's metrics (all its processes), the answering
    process's catalogue, and the learned ranker."""

    replica: int
    pid: int
    posts: int  # in the answering process's catalogue
    metrics: MetricsSummary
    ranker: RankerOverview
