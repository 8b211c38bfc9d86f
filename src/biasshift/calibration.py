"""Calibration token windows for pruning (Wanda), from C4 or from a local text file.

Sampling follows the Wanda reference procedure (docs/strategies.md, Wanda pruning): a ``random.Random(seed)``
draws documents uniformly until one tokenizes to *more than* ``seqlen`` tokens, then a random
window of exactly ``seqlen`` tokens is taken from it (the window start is drawn from
``[0, n_tokens - seqlen - 1]``).  Text is tokenized raw, without special tokens and without a chat
template.

When no document of the corpus is long enough (typical for small local files), all documents are
concatenated, separated by a blank line, into one token stream and random windows are taken from
that stream instead.  This fallback is flagged in the returned metadata and with a warning.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download

__all__ = [
    "C4_FILENAME",
    "C4_REPO_ID",
    "CalibrationDataError",
    "load_calibration_ids",
    "read_documents",
]

C4_REPO_ID = "allenai/c4"
C4_FILENAME = "en/c4-train.00000-of-01024.json.gz"

_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_TXT_SUFFIXES = (".txt",)
_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")


class CalibrationDataError(Exception):
    """The calibration data cannot be obtained or is unusable."""


# --------------------------------------------------------------------------------------------
# Reading documents
# --------------------------------------------------------------------------------------------


def _read_txt(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrationDataError(f"cannot read calibration file {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CalibrationDataError(f"{path}: line {line}: not valid UTF-8 ({exc.reason})") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [doc.strip() for doc in _BLANK_LINE.split(text) if doc.strip()]


def _read_jsonl(path: Path) -> list[str]:
    docs: list[str] = []
    lineno = 0
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CalibrationDataError(
                        f"{path}: line {lineno}: invalid JSON ({exc.msg}); expected one JSON object "
                        'per line with a "text" field (C4 format)'
                    ) from exc
                if not isinstance(record, dict) or "text" not in record:
                    raise CalibrationDataError(f'{path}: line {lineno}: expected a JSON object with a "text" field')
                text = record["text"]
                if not isinstance(text, str):
                    raise CalibrationDataError(
                        f'{path}: line {lineno}: the "text" field must be a string, got {type(text).__name__}'
                    )
                if text.strip():
                    docs.append(text)
    except UnicodeDecodeError as exc:
        raise CalibrationDataError(f"{path}: line {lineno + 1}: not valid UTF-8 ({exc.reason})") from exc
    except (OSError, EOFError) as exc:  # includes gzip.BadGzipFile and truncated archives
        where = f" after line {lineno}" if lineno else ""
        raise CalibrationDataError(f"cannot read calibration file {path}{where}: {exc}") from exc
    return docs


def read_documents(path: str | os.PathLike[str]) -> list[str]:
    """Read the documents of a local calibration file.

    * ``.txt``: documents separated by blank lines (surrounding whitespace is stripped);
    * ``.jsonl`` / ``.json`` / ``.jsonl.gz`` / ``.json.gz``: JSON Lines as in C4, one object per
      line with a string ``"text"`` field (blank lines are skipped, other fields ignored).

    Empty documents are dropped.  Raises :class:`CalibrationDataError` (naming the file and, for
    malformed content, the line) when the file is missing, unreadable, malformed or has no
    documents.
    """
    p = Path(path)
    if not p.is_file():
        raise CalibrationDataError(f"calibration file not found: {p}")
    name = p.name.lower()
    if name.endswith(_TXT_SUFFIXES):
        docs = _read_txt(p)
    elif name.endswith(_JSONL_SUFFIXES):
        docs = _read_jsonl(p)
    else:
        raise CalibrationDataError(
            f"unsupported calibration file type: {p} (use .txt with blank-line separated documents, "
            'or .jsonl / .json.gz with one {"text": ...} object per line)'
        )
    if not docs:
        raise CalibrationDataError(f"calibration file {p} contains no documents")
    return docs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_c4(cache_dir: str | os.PathLike[str] | None, revision: str | None) -> Path:
    try:
        local = hf_hub_download(
            repo_id=C4_REPO_ID,
            filename=C4_FILENAME,
            repo_type="dataset",
            revision=revision,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # network, offline mode, auth, disk: all reported the same way
        raise CalibrationDataError(
            f"could not download the C4 calibration shard {C4_FILENAME} from the Hugging Face dataset "
            f"repo {C4_REPO_ID} ({type(exc).__name__}: {exc}). Pass a local text file as the calibration "
            'source instead: a .txt file with documents separated by blank lines, or a .jsonl / .json.gz '
            'file with one {"text": ...} object per line (e.g. a manually downloaded copy of the C4 shard).'
        ) from exc
    return Path(local)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _encode(tokenizer: Any, text: str) -> list[int]:
    enc = tokenizer(text, add_special_tokens=False, verbose=False)
    ids = enc["input_ids"]
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return list(ids)


def _sample_from_documents(
    docs: list[str], tokenizer: Any, nsamples: int, seqlen: int, seed: int
) -> list[list[int]] | None:
    """Wanda-style sampling; ``None`` when no document has more than ``seqlen`` tokens.

    Lengths of documents found too short are remembered, so each is tokenized at most once and
    the absence of any long document is detected once every document has been seen short.  The
    sequence of random draws is unaffected by this bookkeeping.
    """
    rng = random.Random(seed)
    too_short: set[int] = set()
    rows: list[list[int]] = []
    for _ in range(nsamples):
        while True:
            if len(too_short) == len(docs):
                return None
            idx = rng.randint(0, len(docs) - 1)
            if idx in too_short:
                continue
            ids = _encode(tokenizer, docs[idx])
            if len(ids) > seqlen:
                break
            too_short.add(idx)
        start = rng.randint(0, len(ids) - seqlen - 1)
        rows.append(ids[start : start + seqlen])
    return rows


def _sample_from_stream(stream: list[int], nsamples: int, seqlen: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(nsamples):
        start = rng.randint(0, len(stream) - seqlen - 1)
        rows.append(stream[start : start + seqlen])
    return rows


def load_calibration_ids(
    tokenizer: Any,
    source: str | os.PathLike[str] = "c4",
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Return ``(ids, metadata)`` with ``ids`` a ``LongTensor[nsamples, seqlen]``.

    ``source`` is ``"c4"`` (downloads ``en/c4-train.00000-of-01024.json.gz`` of the dataset repo
    ``allenai/c4`` through ``huggingface_hub``, cached in ``cache_dir``; ``revision`` pins the
    dataset commit) or the path of a local ``.txt`` / ``.jsonl`` / ``.json.gz`` file (see
    :func:`read_documents`).  ``tokenizer`` is a Hugging Face tokenizer (called with
    ``add_special_tokens=False``).

    ``metadata`` holds ``source``, ``path``, ``sha256`` (of the file read), ``nsamples``,
    ``seqlen``, ``seed``, ``n_documents``, ``sampling`` (``"documents"`` or ``"concatenated"``),
    ``fallback_concatenated`` (bool), ``stream_tokens`` (only for the fallback), ``tokenizer``
    and ``add_special_tokens``.

    Raises :class:`CalibrationDataError` when the data cannot be obtained or is too short, and
    ``ValueError`` for invalid ``nsamples`` / ``seqlen``.
    """
    for name, value in (("nsamples", nsamples), ("seqlen", seqlen)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")

    meta: dict[str, Any] = {}
    if isinstance(source, str) and source == "c4":
        path = _download_c4(cache_dir, revision)
        meta.update(source="c4", hf_repo_id=C4_REPO_ID, hf_filename=C4_FILENAME, revision=revision)
    else:
        path = Path(source)
        if not path.is_file():
            raise CalibrationDataError(
                f"calibration source {str(source)!r} is neither 'c4' nor an existing file"
            )
        meta.update(source=str(source))

    docs = read_documents(path)
    meta.update(
        path=str(path),
        sha256=_sha256(path),
        nsamples=nsamples,
        seqlen=seqlen,
        seed=seed,
        n_documents=len(docs),
        tokenizer=getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        add_special_tokens=False,
    )

    rows = _sample_from_documents(docs, tokenizer, nsamples, seqlen, seed)
    if rows is not None:
        meta.update(sampling="documents", fallback_concatenated=False)
    else:
        stream = _encode(tokenizer, "\n\n".join(docs))
        if len(stream) <= seqlen:
            raise CalibrationDataError(
                f"calibration data {path} is too short: its {len(docs)} documents concatenated give "
                f"{len(stream)} tokens, need at least seqlen + 1 = {seqlen + 1}"
            )
        rows = _sample_from_stream(stream, nsamples, seqlen, seed)
        meta.update(sampling="concatenated", fallback_concatenated=True, stream_tokens=len(stream))
        warnings.warn(
            f"no document in {path} has more than seqlen={seqlen} tokens; calibration windows were "
            f"drawn from the concatenation of all {len(docs)} documents ({len(stream)} tokens)",
            UserWarning,
            stacklevel=2,
        )

    ids = torch.tensor(rows, dtype=torch.long)
    return ids, meta
