"""Query hydrators: fill the query with what is known about the user (run in parallel)."""

from __future__ import annotations

from feed.pipeline.components import BaseComponent, FeedQuery
from feed.social_graph import SocialGraphClient
from feed.stores.feature_store import FeatureStore
from feed.stores.sessions import FeedSessions


class UserFeaturesHydrator(BaseComponent):
    """Sets `query.user`: interest vector, event count, seen posts, author affinity."""

    name = "user_features"

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    async def hydrate(self, query: FeedQuery) -> None:
        query.user = await self._store.user_features(query.user_key)


class SocialGraphHydrator(BaseComponent):
    """Sets `query.graph`: followed, blocked and muted authors from the host (cached)."""

    name = "social_graph"

    def __init__(self, client: SocialGraphClient) -> None:
        self._client = client

    async def hydrate(self, query: FeedQuery) -> None:
        query.graph = await self._client.get(query.user_id)


class ServedPostsHydrator(BaseComponent):
    """Sets `query.served`: posts already served in this feed session (the cursor)."""

    name = "served_posts"

    def __init__(self, sessions: FeedSessions) -> None:
        self._sessions = sessions

    async def hydrate(self, query: FeedQuery) -> None:
        query.served = await self._sessions.served(query.cursor)
