"""The API process's long-lived clients, opened and closed together."""

from __future__ import annotations

import contextlib
import gc
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated

import httpx
import structlog
from celery import Celery
from litestar.params import Dependency

from feed.aio import forever, running
from feed.config import Settings
from feed.events.broker import CONSUMER_GROUP, Broker, EventPublisher, create_broker, prepare_event_stream
from feed.metrics import refresh_backlogs
from feed.pipeline.features import FEATURES
from feed.pipeline.home_feed import build_home_feed, build_ranking_cache
from feed.pipeline.paging import PagedFeed
from feed.ranking.model import RankerSlot
from feed.ranking.sync import RankerSync
from feed.replica import claim_replica
from feed.social_graph import SocialGraphClient
from feed.stores import keys
from feed.stores.backlog import Backlogs
from feed.stores.catalog.model import PostCatalog
from feed.stores.catalog.sync import CatalogSync
from feed.stores.connection import AsyncRedis, connect
from feed.stores.feature_store import FeatureStore
from feed.stores.index.factory import open_vector_index
from feed.stores.index.remote import RemoteVectorIndex
from feed.stores.index.sync import IndexSync
from feed.stores.index.vectors import IndexReader, space_dims
from feed.stores.post_store import PostStore
from feed.stores.ranker_store import RankerStore
from feed.stores.sessions import FeedSessions
from feed.stores.social_graphs import SocialGraphCache
from feed.stores.write_limits import WriteLimits
from feed.usecases import FeedService, InteractionIntake, PostIntake

log = structlog.get_logger(__name__)

GC_YOUNG_THRESHOLD = 20_000  # allocations between young-generation collections (Python's default: 700)


@dataclass(frozen=True, slots=True)
class Services:
    """What the controllers need; injected, never imported as globals."""

    settings: Settings
    replica: int  # this process's slot among the API processes on this host (feed.replica)
    redis: AsyncRedis
    features: FeatureStore
    index: IndexReader  # the index owner's searches (embedded), or the Qdrant server
    catalog: PostCatalog
    catalog_sync: CatalogSync
    broker: Broker
    home_feed: PagedFeed
    post_intake: PostIntake
    interactions: InteractionIntake
    feeds: FeedService
    ranker: RankerSlot  # the learned model serving now (None inside: the hand-set formula)
    rankers: RankerStore  # the deployed model and the training reports


def ingest_queue_key(celery: Celery) -> str:
    """The AsyncRedis list holding the ingest tasks waiting for a worker: kombu prefixes every key it
    writes with the transport's `global_keyprefix`."""
    prefix = celery.conf.broker_transport_options.get("global_keyprefix", "")
    return f"{prefix}{celery.conf.task_default_queue}"


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, celery: Celery, clock: Callable[[], float] = time.time
) -> AsyncIterator[Services]:
    """Connect everything; the post catalogue is loaded first, and it is kept in sync by a
    background task while open. Embedded, the host's index owner (`feed/index_owner.py`) keeps
    the shard and answers the searches; with a Qdrant server, the API processes share one
    index-stream group (a consumer each) and apply the stream to it themselves."""
    replica = claim_replica(settings.data_dir)
    redis = connect(settings.redis_url, max_connections=512)
    index: IndexReader
    if settings.qdrant_url:
        server = open_vector_index(settings)
        index = server
        index_sync: contextlib.AbstractAsyncContextManager[None] = IndexSync(
            redis,
            server,
            keys.INDEX_GROUP,
            f"api-{socket.gethostname()}-{replica.index}",
            reclaim_idle_ms=settings.event_reclaim_idle_ms,
            trim_every_s=settings.stream_trim_every_s,
            drop_idle_groups_s=settings.index_group_drop_idle_s,
        ).running()
    else:
        index = RemoteVectorIndex(settings.index_socket())
        index_sync = contextlib.nullcontext()
    broker = create_broker(settings)
    features = FeatureStore(redis, settings.seen_max)
    sessions = FeedSessions(redis, settings.served_ttl_s, settings.session_ranking_ttl_s)
    catalog = PostCatalog(space_dims(settings), horizons_s=settings.ranking.trending_horizons_s)
    ranker = RankerSlot()
    rankers = RankerStore(redis)
    ranker_sync = RankerSync(rankers, ranker, FEATURES, settings.data_dir / "ranker")
    async with httpx.AsyncClient() as http:
        graph = SocialGraphClient(
            SocialGraphCache(redis),
            http,
            settings.backend_url,
            settings.social_graph_timeout_s,
            settings.social_graph_ttl_s,
        )
        limits = WriteLimits(redis, settings.write_limit_per_key, settings.write_limit_per_user, clock)
        publisher = EventPublisher(broker, settings.events_topic, settings.event_publish_timeout_s)
        home_feed = PagedFeed(
            build_home_feed(settings, catalog, features, index, graph, sessions, ranker),
            sessions,
            settings.session_keep,
            build_ranking_cache(settings, catalog, features, ranker),
        )
        services = Services(
            settings=settings,
            redis=redis,
            features=features,
            index=index,
            replica=replica.index,
            catalog=catalog,
            catalog_sync=CatalogSync(
                redis,
                catalog,
                snapshots=settings.catalog_snapshots(),
                writes_snapshots=replica.index == 0,
                snapshot_every_s=settings.catalog_snapshot_every_s,
                host=socket.gethostname(),
            ),
            broker=broker,
            home_feed=home_feed,
            post_intake=PostIntake(PostStore(redis), celery, limits),
            interactions=InteractionIntake(publisher, limits),
            feeds=FeedService(home_feed, ranker),
            ranker=ranker,
            rankers=rankers,
        )
        await prepare_event_stream(settings, redis)
        await broker.connect()
        try:
            await services.catalog_sync.load()
            await ranker_sync.refresh()
            # What exists now (the catalogue, modules, clients) lives as long as the process:
            # keep it out of the collector's scans, and collect young objects less often
            # (a request allocates thousands; full collections over the heap took ms each).
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD)
            backlogs = Backlogs(
                redis, settings.events_topic, CONSUMER_GROUP, keys.INDEX_GROUP, ingest_queue_key(celery)
            )
            refresh = forever(
                partial(refresh_backlogs, backlogs), log, "metrics_refresh_failed", every_s=5.0, retry_s=5.0
            )
            async with (
                index_sync,
                services.catalog_sync.running(),
                running(refresh, "metrics-backlogs"),
                running(ranker_sync.run(), "ranker-sync"),
            ):
                yield services
        finally:
            await services.home_feed.pipeline.drain()
            await broker.stop()
            await index.close()
            await redis.aclose()
            replica.release()


ServicesDep = Annotated[Services, Dependency(skip_validation=True)]
"""How controllers declare the injected services (not validated per request)."""
