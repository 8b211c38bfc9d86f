"""Locating benchmark data files: a local data directory first, then a download cache.

Resolution order for a file with relative path ``rel`` (e.g. ``crows_pairs/crows_pairs_anonymized.csv``):

1. ``--data-dir`` (``data_dir`` argument), then the ``BIASSHIFT_DATA_DIR`` environment variable;
2. the download cache ``$BIASSHIFT_CACHE/data`` (default ``~/.cache/biasshift/data``);
3. a download from the canonical upstream source into that cache, checked against a pinned sha256
   when one is known.

The layout of a data directory is documented in docs/data.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError


@dataclass(frozen=True)
class DataFile:
    """One upstream file a benchmark needs."""

    rel: str  # path relative to the data directory
    url: str | None = None  # plain HTTPS source (pinned to a commit where possible)
    hf_repo: str | None = None  # Hugging Face dataset repo, used when url is None
    hf_filename: str | None = None
    hf_revision: str = "main"
    sha256: str | None = None  # verified after download when known
    description: str = ""

    @property
    def source(self) -> str:
        if self.url:
            return self.url
        if self.hf_repo:
            return f"hf://datasets/{self.hf_repo}@{self.hf_revision}/{self.hf_filename}"
        return "(no download source)"


@dataclass(frozen=True)
class ResolvedFile:
    path: Path
    sha256: str
    origin: str  # "data_dir", "env", "cache" or "download"
    verified: bool  # sha256 matched a pinned checksum
    expected_sha256: str | None = None  # the pinned upstream checksum, if any

    @property
    def checksum(self) -> str:
        """``verified`` (equal to the pinned upstream bytes), ``differs`` (a local file that is not the
        pinned upstream version: used, with a warning) or ``not pinned`` (no upstream checksum known)."""
        if self.expected_sha256 is None:
            return "not pinned"
        return "verified" if self.verified else "differs"

    def warning(self, rel: str) -> str | None:
        if self.checksum != "differs":
            return None
        return (f"{self.path} ({rel}) differs from the pinned upstream file (sha256 {self.sha256[:12]}..., "
                f"upstream {self.expected_sha256[:12]}...); using it as given, recorded in the results")


def cache_dir() -> Path:
    root = os.environ.get("BIASSHIFT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "biasshift"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def data_dirs(data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    dirs: list[tuple[Path, str]] = []
    if data_dir:
        dirs.append((Path(data_dir).expanduser(), "data_dir"))
    env = os.environ.get("BIASSHIFT_DATA_DIR")
    if env:
        dirs.append((Path(env).expanduser(), "env"))
    return dirs


def find_local(spec: DataFile, data_dir: str | os.PathLike | None) -> tuple[Path, str] | None:
    for d, origin in data_dirs(data_dir):
        p = d / spec.rel
        if p.is_file():
            return p, origin
    cached = cache_dir() / "data" / spec.rel
    if cached.is_file():
        return cached, "cache"
    return None


def resolve(spec: DataFile, data_dir: str | os.PathLike | None = None, *, download: bool = True) -> ResolvedFile:
    """Find ``spec`` locally or download it; raise DataError with every place looked at."""
    found = find_local(spec, data_dir)
    if found is not None:
        path, origin = found
        digest = sha256_file(path)
        return ResolvedFile(path, digest, origin, verified=spec.sha256 is not None and digest == spec.sha256,
                            expected_sha256=spec.sha256)
    looked = [str(d / spec.rel) for d, _ in data_dirs(data_dir)] + [str(cache_dir() / "data" / spec.rel)]
    if not download:
        raise DataError(
            f"data file '{spec.rel}' not found; looked in: {', '.join(looked)}. "
            f"Pass --data-dir or set BIASSHIFT_DATA_DIR (layout: docs/data.md)",
            path=spec.rel,
        )
    target = cache_dir() / "data" / spec.rel
    try:
        _download(spec, target)
    except DataError:
        raise
    except Exception as exc:  # network errors of every kind end up here
        raise DataError(
            f"data file '{spec.rel}' not found locally (looked in: {', '.join(looked)}) and the download from "
            f"{spec.source} failed: {type(exc).__name__}: {exc}. Put the upstream file at one of those paths "
            f"or pass --data-dir (layout: docs/data.md)",
            path=spec.rel,
        ) from None
    digest = sha256_file(target)
    return ResolvedFile(target, digest, "download", verified=spec.sha256 is not None, expected_sha256=spec.sha256)


def _download(spec: DataFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if spec.url:
            with urllib.request.urlopen(spec.url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
        elif spec.hf_repo and spec.hf_filename:
            from huggingface_hub import hf_hub_download

            got = hf_hub_download(
                repo_id=spec.hf_repo,
                filename=spec.hf_filename,
                repo_type="dataset",
                revision=spec.hf_revision,
            )
            shutil.copyfile(got, tmp)
        else:
            raise DataError(f"no download source is known for '{spec.rel}'", path=spec.rel)
        if spec.sha256 is not None:
            digest = sha256_file(tmp)
            if digest != spec.sha256:
                raise DataError(
                    f"checksum mismatch for download of '{spec.rel}' from {spec.source}: "
                    f"expected sha256 {spec.sha256}, got {digest}",
                    path=spec.rel,
                )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_available(spec: DataFile, data_dir: str | os.PathLike | None) -> bool:
    return find_local(spec, data_dir) is not None


__all__ = [
    "DataFile",
    "ResolvedFile",
    "resolve",
    "is_available",
    "cache_dir",
    "sha256_file",
]
