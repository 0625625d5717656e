"""The home feed, assembled as an explicit list of components. Reading this file tells the whole feed."""

from __future__ import annotations

from feed.config import Settings
from feed.pipeline.candidate_hydrators import (
    CFFactorsHydrator,
    EngagementCountsHydrator,
    PostRecordHydrator,
    TrendingHydrator,
)
from feed.pipeline.filters import (
    BlockedAuthorFilter,
    DuplicateFilter,
    HiddenAuthorFilter,
    MaxAgeFilter,
    MissingPostFilter,
    MutedKeywordFilter,
    OwnPostFilter,
    SeenFilter,
    ServedFilter,
)
from feed.pipeline.framework import Pipeline
from feed.pipeline.hydrators import ServedPostsHydrator, SocialGraphHydrator, UserFeaturesHydrator
from feed.pipeline.rerankers import AuthorDiversityReranker
from feed.pipeline.scorers import (
    AuthorAffinityScorer,
    CollaborativeScorer,
    EngagementScorer,
    FreshnessScorer,
    NetworkScorer,
    SimilarityScorer,
    TrendingScorer,
)
from feed.pipeline.side_effects import RecordServedSideEffect
from feed.pipeline.sources import FreshSource, PhoenixSource, ThunderSource, TrendingSource
from feed.social_graph import SocialGraphClient
from feed.stores.feature_store import FeatureStore
from feed.stores.vectors import VectorIndex


def build_home_feed(
    settings: Settings, store: FeatureStore, index: VectorIndex, graph: SocialGraphClient
) -> Pipeline:
    """The home-feed pipeline; components named in DISABLED_COMPONENTS are switched off."""
    r = settings.ranking
    return Pipeline(
        hydrators=[
            UserFeaturesHydrator(store),
            SocialGraphHydrator(graph),
            ServedPostsHydrator(store),
        ],
        sources=[
            ThunderSource(store, r.thunder_per_author, r.thunder_budget, settings.timeline_max_age_s),
            PhoenixSource(index, r.phoenix_budget),
            TrendingSource(store, r.trending_budget),
            FreshSource(store, r.fresh_budget),
        ],
        candidate_hydrators=[
            PostRecordHydrator(store),
            EngagementCountsHydrator(store),
            TrendingHydrator(store),
            CFFactorsHydrator(store),
        ],
        filters=[
            DuplicateFilter(),
            MissingPostFilter(),
            OwnPostFilter(),
            BlockedAuthorFilter(),
            HiddenAuthorFilter(),
            MutedKeywordFilter(),
            SeenFilter(),
            ServedFilter(),
            MaxAgeFilter(settings.timeline_max_age_s),
        ],
        scorers=[
            SimilarityScorer(r.similarity_weight, r.space_weights),
            EngagementScorer(r),
            TrendingScorer(r.trending_weight),
            CollaborativeScorer(r.cf_weight, r.cf_half_events),
            AuthorAffinityScorer(r.affinity_weight),
            FreshnessScorer(r.freshness_half_life_s),
            NetworkScorer(r.in_network_factor, r.out_of_network_factor),
        ],
        rerankers=[
            AuthorDiversityReranker(r.author_diversity_decay),
        ],
        side_effects=[
            RecordServedSideEffect(store, settings.served_ttl_s),
        ],
        disabled=frozenset(settings.disabled_components),
        source_timeout_s=r.source_timeout_s,
    )
