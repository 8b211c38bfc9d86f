"""One writer per run directory: an OS-level advisory lock (``fcntl.flock``) on ``RUN_DIR/.biasshift.lock``.

``biasshift run`` takes the lock before it writes anything into the run directory and holds it until it
exits. A second ``biasshift run`` on the same directory fails at once with a message naming the holder
(pid, host, start time, command) instead of duplicating the work. The kernel releases the lock when the
holder exits in any way (crash, SIGKILL, power loss of a local disk), so a stale lock file never blocks a
rerun: the file's content is only information, the lock itself is the ``flock``.

Distributed workers (``--executor ray``) do not take the lock: the driver holds it for the whole run and
the workers only append answers to the store, which SQLite serialises. ``flock`` is reliable on local
file systems; on NFS it depends on the server (docs/reliability.md).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .errors import DiskError, LockError

LOCK_NAME = ".biasshift.lock"


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process (no holder information recorded yet)"
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {when} ({info.get('command', '?')})"


def read_holder(run_dir: str | Path) -> dict[str, Any]:
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class RunLock:
    """``with RunLock(run_dir):`` holds the exclusive lock of ``run_dir`` (which must exist)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DiskError(exc, "creating the run directory lock", self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(
                    f"the run directory {self.run_dir} is in use by {_describe(read_holder(self.run_dir))}: "
                    "wait for it to finish (then rerun to resume), or use another --out directory"
                ) from None
            raise DiskError(exc, "locking the run directory", self.path) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        try:  # holder information for the message above; the flock is what excludes
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass  # a full disk must not stop us from holding the lock; the message then says "no information"
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
