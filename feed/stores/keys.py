"""Every Redis key the engine uses, in one place. All keys share the `feed:` prefix."""

from __future__ import annotations

P = "feed:"

INDEX_STREAM = P + "index:ops"  # stream of {op: upsert|delete|cf, post: key} for the vector index
INDEX_GROUP = "indexer"
# stream of {posts, impressions, authors: msgpack lists of keys} whose counters changed,
# appended in the same transaction as the change; API processes tail it (catalog/sync.py)
CHANGES_STREAM = P + "changes"
CHANGES_MAXLEN = 100_000  # approximate cap: a reader that falls further behind reloads
PENDING_POSTS = P + "pending:posts"  # zset post key -> first time an event waited for it
DROPPED_EVENTS = P + "stats:events:dropped"  # hash reason -> count
APPLIED_EVENTS = P + "stats:events:applied"  # string counter
INTERACTION_LOG = P + "log:interactions"  # stream of applied events {user, post, action, ts} for CF training
# stream of served pages {page: msgpack ServedPage} with the features they were ranked with (ranker training)
SERVED_LOG = P + "log:served"
CF_USERS = P + "cf:users"  # hash user key -> float32 factors of the current CF model
CF_ITEMS = P + "cf:items"  # hash post key -> float32 factors of the current CF model
CF_META = P + "cf:meta"  # hash: trained_at, users, items, pairs, factors, version
# hash: applied-event count and time at the last training's start and finish, its outcome and result
BATCH_STATE = P + "batch:state"
BATCH_LOCK = P + "batch:lock"  # string: token of the retrain running now (SET NX with an expiry)
RANKER_MODEL = P + "ranker:model"  # string: the serving learned ranker (feed/ranking/model.py's bytes)
RANKER_VERSION = P + "ranker:version"  # string: its version, read every few seconds by each API process
RANKER_REPORTS = (
    P + "ranker:reports"
)  # list of JSON training reports, newest first (kept: RANKER_REPORTS_KEEP)
RANKER_REPORTS_KEEP = 20
TRENDING = P + "trending"  # zset post key -> decayed positive engagement, in units of TRENDING_META's base
TRENDING_META = P + "trending:meta"  # hash: base (epoch s), half_life_s
IMPRESSIONS = P + "impressions"  # zset post key -> times the engine served it in a feed
AUTHOR_REACH = P + "authors:reach"  # zset author key -> interactions with the author's posts


def post(key: str) -> str:
    """Hash: the ingested post (ids, author, created_at, type, snippet, vector)."""
    return f"{P}post:{key}"


def post_state(key: str) -> str:
    """Hash: ingest state (queued / ingested / failed / deleted), error, task id."""
    return f"{P}post:{key}:state"


def post_counts(key: str) -> str:
    """Hash: action -> count of interactions on the post."""
    return f"{P}post:{key}:counts"


def user(key: str) -> str:
    """Hash: `vec` (float32 interest vector), `events` (applied interaction count)."""
    return f"{P}user:{key}"


def user_seen(key: str) -> str:
    """Zset: post keys the user interacted with, scored by time."""
    return f"{P}user:{key}:seen"


def user_engaged(key: str) -> str:
    """Zset: post keys the user liked, commented on or shared, scored by time (newest kept)."""
    return f"{P}user:{key}:engaged"


def user_hidden_authors(key: str) -> str:
    """Set: author keys the user hid a post of, reported or blocked through interactions."""
    return f"{P}user:{key}:hidden"


def user_affinity(key: str) -> str:
    """Zset: author key -> accumulated action weight of the user's interactions."""
    return f"{P}user:{key}:aff"


def event_done(event_id: str) -> str:
    """String: marks an applied event (idempotency)."""
    return f"{P}ev:{event_id}"


def pending_events(post_key: str) -> str:
    """List: events that arrived before their post was ingested."""
    return f"{P}pending:{post_key}"


def served(cursor: str) -> str:
    """Set: post keys already served in a feed session (pagination)."""
    return f"{P}served:{cursor}"


def session_ranking(cursor: str) -> str:
    """String: the ranked candidates left for the next pages of a feed session, as one msgpack
    value of columns (a new name: releases before it kept a list under `session:<cursor>`,
    which expires on its own)."""
    return f"{P}session-ranking:{cursor}"


def session_taken(cursor: str) -> str:
    """Counter: how many of the session's stored ranking later pages took."""
    return f"{P}session-ranking:{cursor}:taken"


def retrieval(source: str, user_key: str) -> str:
    """String: msgpack of a user's last nearest-neighbour result from `source` (RetrievalCache)."""
    return f"{P}retrieval:{source}:{user_key}"


def ranking(user_key: str) -> str:
    """String: msgpack of a user's last kept ranking (RankingCache's shared layer)."""
    return f"{P}ranking:{user_key}"


def write_window(kind: str, who: str, second: int) -> str:
    """String counter: writes by an API key or a user (`kind`) in one second (WriteLimits)."""
    return f"{P}rl:{kind}:{who}:{second}"


def trending_horizon(half_life_s: float) -> str:
    """Zset: post key -> decayed positive engagement at this half-life (RankingConfig.trending_horizons_s),
    in units of its meta's base; named by the half-life in whole seconds."""
    return f"{P}trending:h:{round(half_life_s)}"


def trending_horizon_meta(half_life_s: float) -> str:
    """Hash: base (epoch s), half_life_s of `trending_horizon(half_life_s)`."""
    return f"{trending_horizon(half_life_s)}:meta"


def social_graph(user_key: str) -> str:
    """String: cached JSON social graph of a user."""
    return f"{P}sg:{user_key}"
