"""Keeping an API process's learned ranker in step with the one deployed in Redis."""

from __future__ import annotations

import asyncio

import structlog

from feed.logging import log_failure
from feed.ranking.model import RankerModel, RankerSlot
from feed.stores.ranker_store import RankerStore

log = structlog.get_logger(__name__)


class RankerSync:
    """Loads the deployed model into `slot` whenever its version changes (one GET per poll)."""

    def __init__(self, store: RankerStore, slot: RankerSlot, every_s: float = 2.0) -> None:
        self._store = store
        self._slot = slot
        self._every_s = every_s

    async def refresh(self) -> bool:
        """Load the deployed model if it is not the one in the slot; True when it swapped."""
        version = await self._store.version()
        current = self._slot.model
        if version == (current.version if current else 0):
            return False
        raw = await self._store.model()
        model = RankerModel.from_bytes(raw) if raw is not None and version else None
        self._slot.model = model
        log.info("ranker_loaded", version=model.version if model else 0)
        return True

    async def run(self) -> None:
        """Refresh forever; a failed round (Redis away) is logged and retried."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log_failure(log, "ranker_sync_failed", exc)
            await asyncio.sleep(self._every_s)
