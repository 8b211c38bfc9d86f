"""On-disk cache of computed variants (pruned checkpoints).

Layout: ``$BIASSHIFT_CACHE/variants/<key>/`` holds a Hugging Face model directory (safetensors) plus
``biasshift-variant.json``, written last, which marks the entry complete and records how it was
made.  ``<key>`` is the sha256 of the canonical JSON of the base model fingerprint and the exact
strategy configuration (:func:`variant_key`), so a change to either yields a new entry and a rerun
with the same settings loads the entry instead of recomputing it.

Entries are written to a temporary sibling directory and renamed into place, so an interrupted
build never leaves a half-written entry behind, and two concurrent builds of the same entry are
harmless (the second rename loses and its copy is deleted).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data import cache_dir
from ..errors import DiskError

MARKER = "biasshift-variant.json"
_PARTIAL = re.compile(r"\.[0-9a-f]+\.partial-(\d+)")
#: bump when the stored format or the way entries are computed changes
FORMAT_VERSION = 1


def variants_root() -> Path:
    return cache_dir() / "variants"


def variant_key(material: dict[str, Any]) -> str:
    blob = json.dumps({"format_version": FORMAT_VERSION, **material}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def clean_stale(root: Path | None = None) -> list[Path]:
    """Remove ``.<key>.partial-<pid>`` directories whose writer (``pid`` on this host) is no longer running.

    A build killed with SIGKILL (or a power loss) cannot clean up after itself; the next build or lookup
    does. Returns the removed paths.
    """
    root = root or variants_root()
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _PARTIAL.fullmatch(p.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


def lookup(key: str) -> tuple[Path, dict[str, Any]] | None:
    """The complete cache entry for ``key`` and its metadata, or None."""
    clean_stale()
    d = variants_root() / key
    try:
        meta = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d, meta


def store(key: str, material: dict[str, Any], write: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """Create the entry for ``key``: ``write(tmp_dir)`` saves the model and returns extra metadata."""
    root = variants_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiskError(exc, "creating the variant cache", root) from None
    clean_stale(root)
    final = root / key
    tmp = root / f".{key}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise DiskError(exc, "creating the variant cache entry", tmp) from None
    try:
        try:
            extra = write(tmp)
        except OSError as exc:
            raise DiskError(exc, "saving the pruned checkpoint to the variant cache", final) from None
        except Exception as exc:  # safetensors reports a full disk as its own error type
            if "No space left" in str(exc) or "os error 28" in str(exc):
                raise DiskError(OSError(errno.ENOSPC, str(exc)), "saving the pruned checkpoint to the variant cache",
                                final) from None
            raise
        meta = {"key": key, "format_version": FORMAT_VERSION, "material": material, **extra}
        (tmp / MARKER).write_text(json.dumps(meta, indent=1, default=str))
        if final.exists() and not (final / MARKER).is_file():
            shutil.rmtree(final)  # an incomplete entry left by an older, interrupted writer
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
            found = lookup(key)
            if found is None:
                raise
            return found
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, meta
