"""Which of the API processes sharing one DATA_DIR this process is.

Several API processes (`API_WORKERS`, or several `feed-api` started by hand) can serve one
host. Each claims the lowest free slot number by holding an exclusive lock on
`<data_dir>/replicas/api-<n>.lock` for as long as it lives; the kernel releases the lock
when the process ends, however it ends, so a restarted process takes its slot (and, in
embedded mode, its own Qdrant Edge shard and index-stream group) back.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from feed.stores import keys


@dataclass(frozen=True, slots=True)
class ReplicaSlot:
    """Slot `index` on this host, held while `fd` (the locked file) is open."""

    index: int
    fd: int

    def release(self) -> None:
        """Give the slot up (closing the file drops the lock)."""
        os.close(self.fd)

    @property
    def index_group(self) -> str:
        """The index-stream consumer group of this slot's own embedded shard."""
        return index_group(self.index)


def index_group(slot: int) -> str:
    """The index-stream consumer group of slot `slot`'s embedded shard (slot 0 keeps the group
    name single-process installs always had)."""
    return keys.INDEX_GROUP if slot == 0 else f"{keys.INDEX_GROUP}-{slot}"


def claim_replica(data_dir: Path) -> ReplicaSlot:
    """Lock and return the lowest slot no live process holds."""
    folder = data_dir / "replicas"
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    while True:
        fd = os.open(folder / f"api-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            index += 1
            continue
        return ReplicaSlot(index, fd)
