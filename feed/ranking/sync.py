"""Keeping an API process's learned ranker in step with the one deployed in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import structlog

from feed.aio import forever
from feed.ranking.model import RankerModel, RankerSlot
from feed.stores.ranker_store import RankerStore

log = structlog.get_logger(__name__)


class RankerSync:
    """Loads the deployed model into `slot` whenever its version changes (one GET per poll)."""

    def __init__(
        self,
        store: RankerStore,
        slot: RankerSlot,
        known_features: Iterable[str],
        compiled_folder: Path,
        every_s: float = 2.0,
    ) -> None:
        self._compiled_folder = compiled_folder
        self._known = frozenset(known_features)
        self._version = 0  # the deployed version last looked at
        self._store = store
        self._slot = slot
        self._every_s = every_s

    async def refresh(self) -> bool:
        """Load the deployed model if it is not the one in the slot; True when it swapped."""
        version = await self._store.version()
        if version == self._version:
            return False
        raw = await self._store.model()
        model = await asyncio.to_thread(RankerModel.from_bytes, raw) if raw is not None and version else None
        if model is not None and not set(model.features) <= self._known:
            # a model from a newer release, before this process is upgraded: the formula ranks
            log.warning(
                "ranker_features_unknown", version=version, missing=sorted(set(model.features) - self._known)
            )
            model = None
        self._slot.model = model
        self._version = version
        log.info("ranker_loaded", version=model.version if model else 0)
        if model is not None:
            try:
                compiled = await asyncio.to_thread(model.with_compiled, self._compiled_folder)
            except Exception:  # the LightGBM predictor keeps serving
                log.exception("ranker_compile_failed", version=version)
            else:
                if self._slot.model is model:
                    self._slot.model = compiled
                    log.info("ranker_compiled", version=version)
        return True

    async def run(self) -> None:
        """Refresh forever; a failed round (Redis away) is logged and retried."""
        await forever(self.refresh, log, "ranker_sync_failed", every_s=self._every_s, retry_s=self._every_s)
