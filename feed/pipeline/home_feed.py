"""The home feed, assembled as an explicit list of components. Reading this file tells the whole feed."""

from __future__ import annotations

from feed.config import MAX_PAGE, Settings
from feed.pipeline.candidate_hydrators import (
    AuthorReachHydrator,
    CFFactorsHydrator,
    EngagementCountsHydrator,
    ImpressionsHydrator,
    PostFeaturesHydrator,
    PostTextsHydrator,
    SourcesHydrator,
    TrendingHydrator,
)
from feed.pipeline.features import FeatureLogger
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
from feed.pipeline.hydrators import ServedPostsHydrator, SocialGraphHydrator, UserFeaturesHydrator
from feed.pipeline.ranking_cache import RankingCache
from feed.pipeline.rerankers import (
    AuthorDiversityReranker,
    ExplorationReranker,
    LearnedRanker,
    NearDuplicateReranker,
)
from feed.pipeline.retrieval_cache import RetrievalCache
from feed.pipeline.runner import Pipeline
from feed.pipeline.scorers import (
    AuthorAffinityScorer,
    CollaborativeScorer,
    EngagementScorer,
    FreshnessScorer,
    NetworkScorer,
    SimilarityScorer,
    SmallAuthorScorer,
    TrendingScorer,
)
from feed.pipeline.side_effects import LogServedFeaturesSideEffect, RecordImpressionsSideEffect
from feed.pipeline.sources import (
    CollaborativeSource,
    FreshSource,
    PhoenixSource,
    PopularSource,
    SocialEngagementSource,
    ThunderSource,
    TrendingSource,
)
from feed.ranking.model import RankerSlot
from feed.social_graph import SocialGraphClient
from feed.stores.catalog.model import PostCatalog
from feed.stores.feature_store import FeatureStore
from feed.stores.index.vectors import PostSearch
from feed.stores.rankings import SharedRankings
from feed.stores.retrievals import SharedRetrievals
from feed.stores.served_log import ServedLog
from feed.stores.sessions import FeedSessions


def build_home_feed(
    settings: Settings,
    catalog: PostCatalog,
    store: FeatureStore,
    index: PostSearch,
    graph: SocialGraphClient,
    sessions: FeedSessions,
    ranker: RankerSlot,
) -> Pipeline:
    """The home-feed pipeline; components named in DISABLED_COMPONENTS are switched off. The
    learned ranker scores with the model in `ranker` (the formula's scorers rank until one is
    deployed, and choose the window it scores)."""
    r = settings.ranking
    shared = SharedRetrievals(store.redis, r.retrieval_cache_ttl_s)
    retrieval = RetrievalCache(catalog, r.retrieval_cache_ttl_s, r.retrieval_cache_users, shared)
    return Pipeline(
        catalog=catalog,
        hydrators=[
            UserFeaturesHydrator(store),
            SocialGraphHydrator(graph),
            ServedPostsHydrator(sessions),
        ],
        sources=[
            ThunderSource(catalog, r.thunder_per_author, r.thunder_budget, settings.timeline_max_age_s),
            SocialEngagementSource(
                catalog, store, r.social_budget, r.social_per_user, r.social_max_followees, retrieval
            ),
            PhoenixSource(index, r.phoenix_budget, retrieval),
            CollaborativeSource(index, r.collaborative_budget, retrieval),
            TrendingSource(catalog, r.trending_budget),
            PopularSource(catalog, r.popular_budget, r.action_weights),
            FreshSource(catalog, r.fresh_budget),
        ],
        candidate_hydrators=[
            SourcesHydrator(),
            PostFeaturesHydrator(catalog),
            EngagementCountsHydrator(catalog),
            TrendingHydrator(catalog),
            CFFactorsHydrator(catalog),
            ImpressionsHydrator(catalog),
            AuthorReachHydrator(catalog),
            PostTextsHydrator(catalog, store),
        ],
        filters=[
            DuplicateFilter(),
            MissingPostFilter(),
            OwnPostFilter(catalog),
            BlockedAuthorFilter(catalog),
            HiddenAuthorFilter(catalog),
            MutedKeywordFilter(),
            SeenFilter(catalog),
            ServedFilter(catalog),
            MaxAgeFilter(settings.timeline_max_age_s),
        ],
        scorers=[
            SimilarityScorer(catalog, r.similarity_weight, r.space_weights, r.short_term_share),
            EngagementScorer(r),
            TrendingScorer(r.trending_weight),
            CollaborativeScorer(r.cf_weight, r.cf_half_events),
            AuthorAffinityScorer(catalog, r.affinity_weight),
            FreshnessScorer(r.freshness_half_life_s),
            NetworkScorer(r.in_network_factor, r.out_of_network_factor),
            SmallAuthorScorer(r.small_author_boost, r.small_author_half_reach),
        ],
        rerankers=[
            LearnedRanker(catalog, ranker, r.action_weights),
            FeatureLogger(catalog, r.action_weights),  # features for the served log when the formula ranked
            NearDuplicateReranker(
                catalog,
                r.near_duplicate_threshold,
                r.near_duplicate_strength,
                r.near_duplicate_window,
                ranker,
            ),
            AuthorDiversityReranker(r.author_diversity_decay),
            ExplorationReranker(
                r.exploration_position, r.exploration_max_impressions, r.exploration_prior, r.exploration_seed
            ),
        ],
        side_effects=[
            RecordImpressionsSideEffect(store),
            LogServedFeaturesSideEffect(ServedLog(store.redis, settings.served_log_max)),
        ],
        disabled=frozenset(settings.disabled_components),
        source_timeout_s=r.source_timeout_s,
        rerank_window=r.rerank_window,
    )


def build_ranking_cache(
    settings: Settings, catalog: PostCatalog, store: FeatureStore, ranker: RankerSlot
) -> RankingCache:
    """The cache of each hot user's latest home-feed ranking (`PagedFeed` reads and fills it):
    the largest page (200) and what a session stores after it, before filters; shared by the
    API processes through Redis."""
    r = settings.ranking
    return RankingCache(
        catalog,
        r.ranking_cache_ttl_s,
        r.ranking_cache_mb * 2**20,
        MAX_PAGE + settings.session_keep,
        ranker,
        SharedRankings(store.redis, r.ranking_cache_ttl_s),
    )
