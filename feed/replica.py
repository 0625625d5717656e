"""Which of the API processes sharing one DATA_DIR this process is, and the file locks that
decide it (and which process owns the embedded index).

Several API processes (`API_WORKERS`, or several `feed-api` started by hand) can serve one
host. Each claims the lowest free slot number by holding an exclusive lock on
`<data_dir>/replicas/api-<n>.lock` for as long as it lives; the kernel releases the lock
when the process ends, however it ends, so a restarted process takes its slot back (its
consumer name on a shared Qdrant server's index-stream group, its number in `/health`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ReplicaSlot:
    """Slot `index` on this host, held while `fd` (the locked file) is open."""

    index: int
    fd: int

    def release(self) -> None:
        """Give the slot up (closing the file drops the lock)."""
        os.close(self.fd)


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


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the duration of the context, waiting while another
    process holds it (the kernel drops it when its holder ends, however it ends)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def end_with_parent() -> None:
    """In a child process before it runs its program: ask Linux to send it SIGTERM when its
    parent dies, so a killed parent leaves no child behind (elsewhere the parent stops it)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
