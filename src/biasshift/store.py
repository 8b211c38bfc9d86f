"""The run store: one SQLite database per run directory holding every request and answer.

Each finished engine batch is committed in one transaction, so a run killed at any point loses at most
the batch in flight; a restart skips the committed requests and recomputes the rest. A stored answer is
reused only for a byte-identical request (the request JSON is compared), and the run's identity (model,
dtype, seed, prompt settings) is checked against what the directory was created with.

Schema (docs/results-schema.md):
    meta(key PRIMARY KEY, value)                          -- run identity and settings, JSON values
    variants(name PRIMARY KEY, info)                      -- variant provenance (strategy, config, footprint)
    records(variant, benchmark, key, item_id, request, response, created, PRIMARY KEY(variant, benchmark, key))
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .engine.requests import Answer, Keyed, answer_from_dict, answer_to_dict, answer_type, request_to_dict
from .errors import DiskError, StoreError

SCHEMA_VERSION = 1


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str, path: Path, where: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise StoreError(f"{path} is damaged: {where} is not valid JSON. {_DAMAGED_FIX}") from None


_DAMAGED_FIX = ("Move the file away and rerun the same command to recompute every answer "
                "(results/ and units/ are rewritten from the new store), or restore it from a backup")
_FULL_CODES = {13}  # SQLITE_FULL


def _nearly_full(path: Path, margin: int = 1 << 20) -> bool:
    """True when the file system holding ``path`` has less than ``margin`` bytes free."""
    import os

    try:
        st = os.statvfs(path.parent if not path.is_dir() else path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


@contextmanager
def _guard(path: Path, what: str) -> Iterator[None]:
    """Turn SQLite and OS failures into one-line BiasshiftErrors naming the store and what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        msg = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        if code in _FULL_CODES or "disk is full" in msg or "disk I/O error" in msg:
            import errno

            # SQLite reports a full disk met while growing its WAL/shm files as a plain "disk I/O error"
            full = "I/O" not in msg or _nearly_full(path)
            raise DiskError(OSError(errno.ENOSPC if full else errno.EIO, f"SQLite: {msg}"), what, path) from None
        if isinstance(exc, sqlite3.OperationalError) and "locked" in msg:
            raise StoreError(f"{what} failed: {path} is locked by another process ({msg}); wait and rerun") from None
        raise StoreError(f"{what} failed: {path} is damaged or not a biasshift run store ({msg}). {_DAMAGED_FIX}") from None
    except OSError as exc:
        raise DiskError(exc, what, path) from None


class RunStore:
    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a run store (store.sqlite). Move it away and rerun")
        with _guard(self.path, "creating the run directory"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.is_file() and self.path.stat().st_size > 0
        with _guard(self.path, "opening the run store"):
            self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._open(timeout, existed)
        except BaseException:
            self.conn.close()
            raise

    def _open(self, timeout: float, existed: bool) -> None:
        with _guard(self.path, "opening the run store"):
            if existed:  # a damaged file is refused before anything is written to it
                bad = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
                if bad:
                    raise StoreError(f"{self.path} is damaged (SQLite integrity check: {bad[0]}). {_DAMAGED_FIX}")
                self._check_schema()
            self._init(timeout)
            if existed:
                self._check_rows()

    def _check_rows(self) -> None:
        """Every stored request and answer must be valid JSON (SQLite's json_valid, one fast scan in C)."""
        try:
            bad = self.conn.execute(
                "SELECT variant, benchmark, key FROM records WHERE NOT json_valid(request) OR NOT json_valid(response) "
                "LIMIT 1").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such function" in str(exc):  # an SQLite without JSON support: rows are checked when read
                return
            raise
        if bad is not None:
            raise StoreError(f"{self.path} is damaged: the stored record {bad[0]}/{bad[1]}/{bad[2]} is not valid JSON. "
                             f"{_DAMAGED_FIX}")

    def _check_schema(self) -> None:
        want = {"meta": {"key", "value"}, "variants": {"name", "info"},
                "records": {"variant", "benchmark", "key", "item_id", "request", "response", "created"}}
        for table, cols in want.items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            if have and have != cols:
                raise StoreError(f"{self.path} is not a biasshift run store (table {table} has columns "
                                 f"{', '.join(sorted(have))}). Use another --out directory, or move the file away")

    def _init(self, timeout: float) -> None:
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS variants(name TEXT PRIMARY KEY, info TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS records(
                variant TEXT NOT NULL, benchmark TEXT NOT NULL, key TEXT NOT NULL, item_id TEXT NOT NULL,
                request TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL,
                PRIMARY KEY (variant, benchmark, key));
            """
        )
        got = self.get_meta("schema_version")
        if got is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif got != SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written with store schema {got}; this biasshift reads schema {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- meta
    def get_meta(self, key: str) -> Any:
        with _guard(self.path, "reading the run store"):
            row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else _loads(row[0], self.path, f"meta value {key!r}")

    def set_meta(self, key: str, value: Any) -> None:
        with _guard(self.path, f"writing run metadata {key!r} to the store"):
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _dumps(value)))

    def check_identity(self, identity: dict[str, Any]) -> None:
        """Record the run identity on first use; refuse to mix runs with a different identity."""
        old = self.get_meta("identity")
        if old is None:
            self.set_meta("identity", identity)
            return
        diffs = [f"{k}: stored {old.get(k)!r}, now {identity.get(k)!r}" for k in sorted(set(old) | set(identity))
                 if old.get(k) != identity.get(k)]
        if diffs:
            raise StoreError(
                f"the run directory {self.path.parent} holds results of a different run configuration "
                f"({'; '.join(diffs)}). Use a new --out directory, or the original settings to resume"
            )

    def set_variant(self, name: str, info: dict[str, Any]) -> None:
        with _guard(self.path, f"recording variant {name} in the store"):
            self.conn.execute("INSERT OR REPLACE INTO variants(name, info) VALUES (?, ?)", (name, _dumps(info)))

    def variants(self) -> dict[str, dict[str, Any]]:
        with _guard(self.path, "reading the run store"):
            rows = self.conn.execute("SELECT name, info FROM variants ORDER BY name").fetchall()
        return {n: _loads(i, self.path, f"variant {n!r}") for n, i in rows}

    # ---------------------------------------------------------------- records
    def done(self, variant: str, benchmark: str, items: Iterable[Keyed]) -> set[str]:
        """Keys of ``items`` already answered; raises if a stored request differs from the current one."""
        with _guard(self.path, "reading the run store"):
            stored = dict(
                self.conn.execute("SELECT key, request FROM records WHERE variant=? AND benchmark=?", (variant, benchmark))
            )
        keys = set()
        for it in items:
            old = stored.get(it.key)
            if old is None:
                continue
            if old != _dumps(request_to_dict(it.request)):
                raise StoreError(
                    f"stored request for {variant}/{benchmark}/{it.key} differs from the current one "
                    f"(prompt or decoding settings changed since the run started). Use a new --out directory"
                )
            keys.add(it.key)
        return keys

    def put_many(self, variant: str, benchmark: str, results: list[tuple[Keyed, Answer | dict[str, Any]]]) -> None:
        """Store a batch of answers in one transaction. An answer must be the typed answer of its request's
        kind (a JSON dict is accepted and validated into it first), so nothing malformed reaches the store."""
        if not results:
            return
        now = time.time()
        rows = [
            (variant, benchmark, it.key, it.item_id, _dumps(request_to_dict(it.request)),
             _dumps(answer_to_dict(self._typed(it, resp))), now)
            for it, resp in results
        ]
        with _guard(self.path, f"committing a batch of {variant}/{benchmark} to the store"), self._txn():
            self.conn.executemany(
                "INSERT OR REPLACE INTO records(variant, benchmark, key, item_id, request, response, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    @staticmethod
    def _typed(it: Keyed, resp: Answer | dict[str, Any]) -> Answer:
        kind = it.request.kind
        if isinstance(resp, dict):
            try:
                return answer_from_dict(kind, resp)
            except (KeyError, TypeError) as exc:
                raise StoreError(f"the answer to {it.key} is not a {kind} answer ({exc})") from None
        if not isinstance(resp, answer_type(kind)):
            raise StoreError(f"the answer to {it.key} is a {type(resp).__name__}, not the answer of a {kind} request")
        return resp

    @contextmanager
    def _txn(self) -> Iterator[None]:
        """One IMMEDIATE transaction; on any failure (a full disk) it is rolled back and earlier batches stay."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    def copy_answers(self, source: str, target: str, benchmark: str, items: Iterable[Keyed]) -> int:
        """Store ``source``'s answers to ``items`` as ``target``'s too (answers a variant provably shares with
        the base variant); every item must be answered by ``source`` with a byte-identical request. One
        transaction; keys ``target`` already has are left alone. Returns the number of answers copied."""
        items = list(items)
        with _guard(self.path, "reading the run store"):
            stored = {
                k: (i, rq, rs)
                for k, i, rq, rs in self.conn.execute(
                    "SELECT key, item_id, request, response FROM records WHERE variant=? AND benchmark=?", (source, benchmark)
                )
            }
        have = self.done(target, benchmark, items)
        now = time.time()
        rows = []
        for it in items:
            if it.key in have:
                continue
            got = stored.get(it.key)
            if got is None or got[1] != _dumps(request_to_dict(it.request)):
                raise StoreError(f"cannot share {source}'s answer for {benchmark}/{it.key} with {target}: "
                                 f"{source} has {'no' if got is None else 'a different'} stored request for it")
            rows.append((target, benchmark, it.key, got[0], got[1], got[2], now))
        if rows:
            with _guard(self.path, f"storing {target}'s shared answers for {benchmark}"), self._txn():
                self.conn.executemany(
                    "INSERT OR IGNORE INTO records(variant, benchmark, key, item_id, request, response, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        return len(rows)

    def responses(self, variant: str, benchmark: str) -> dict[str, Answer]:
        """Every stored answer of ``variant`` x ``benchmark``, typed by its request's kind."""
        with _guard(self.path, "reading the run store"):
            rows = self.conn.execute(
                "SELECT key, json_extract(request, '$.kind'), response FROM records WHERE variant=? AND benchmark=?",
                (variant, benchmark),
            ).fetchall()
        out: dict[str, Answer] = {}
        for k, kind, r in rows:
            where = f"the answer of {variant}/{benchmark}/{k}"
            try:
                out[k] = answer_from_dict(kind, _loads(r, self.path, where))
            except (KeyError, TypeError) as exc:
                raise StoreError(f"{self.path}: {where} is not a valid {kind} answer ({exc}). {_DAMAGED_FIX}") from None
        return out

    def records(self, variant: str | None = None, benchmark: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT variant, benchmark, key, item_id, request, response FROM records"
        cond, args = [], []
        if variant is not None:
            cond.append("variant=?")
            args.append(variant)
        if benchmark is not None:
            cond.append("benchmark=?")
            args.append(benchmark)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY variant, benchmark, key"
        with _guard(self.path, "reading the run store"):
            rows = self.conn.execute(q, args).fetchall()
        return [
            {"variant": v, "benchmark": b, "key": k, "item_id": i, "request": _loads(rq, self.path, f"request {v}/{b}/{k}"),
             "response": _loads(rs, self.path, f"the answer of {v}/{b}/{k}")}
            for v, b, k, i, rq, rs in rows
        ]

    # ---------------------------------------------------------------- throughput and sharing (meta)
    def add_throughput(self, variant: str, benchmark: str, kind: str, requests: int, seconds: float,
                       forward_tokens: int, generated_tokens: int) -> None:
        """Accumulate the engine's own measurements for the requests ``variant`` computed (over resumes)."""
        key = f"throughput/{variant}/{benchmark}"
        old = self.get_meta(key) or {}
        self.set_meta(key, {
            "kind": kind,
            "requests": int(old.get("requests", 0)) + requests,
            "seconds": round(float(old.get("seconds", 0.0)) + seconds, 4),
            "forward_tokens": int(old.get("forward_tokens", 0)) + forward_tokens,
            "generated_tokens": int(old.get("generated_tokens", 0)) + generated_tokens,
        })

    def throughput(self, variant: str, benchmark: str, kind: str) -> dict[str, Any]:
        """What ``add_throughput`` accumulated (zeros when nothing was computed), and whether the answers
        were shared with another variant."""
        got = self.get_meta(f"throughput/{variant}/{benchmark}") or {}
        return {
            "kind": kind,
            "requests": int(got.get("requests", 0)),
            "seconds": float(got.get("seconds", 0.0)),
            "forward_tokens": int(got.get("forward_tokens", 0)),
            "generated_tokens": int(got.get("generated_tokens", 0)),
            "shared_with_base": self.shared_from(variant, benchmark) is not None,
        }

    def mark_shared(self, variant: str, benchmark: str, source: str, n_answers: int) -> None:
        self.set_meta(f"shared_with_base/{variant}/{benchmark}", {"from": source, "n_answers": n_answers})

    def shared_from(self, variant: str, benchmark: str) -> dict[str, Any] | None:
        return self.get_meta(f"shared_with_base/{variant}/{benchmark}")

    def count(self, variant: str | None = None, benchmark: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM records", []
        if variant is not None and benchmark is not None:
            q += " WHERE variant=? AND benchmark=?"
            args = [variant, benchmark]
        with _guard(self.path, "reading the run store"):
            return int(self.conn.execute(q, args).fetchone()[0])


# ---------------------------------------------------------------- read-only access (the report)
class StoreReader:
    """Read-only access to a run's store.sqlite for the report (item texts, sample generations).

    Opens the file read-only (never creates, migrates or locks it for writing); a missing, damaged or
    unreadable store makes ``available`` False and every lookup return nothing, because the report's
    statistics never depend on it (it only adds texts for reading)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None
        if not self.path.is_file():
            return
        try:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self.conn.execute("SELECT 1 FROM records LIMIT 1").fetchall()
        except sqlite3.Error:
            self.close()

    @property
    def available(self) -> bool:
        return self.conn is not None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.conn is None:
            return []
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error:
            return []

    @staticmethod
    def _json(text: Any) -> dict[str, Any] | None:
        try:
            v = json.loads(text)
        except (TypeError, ValueError):
            return None
        return v if isinstance(v, dict) else None

    def has(self, variant: str, benchmark: str) -> bool:
        """True when the store holds any record of ``variant`` x ``benchmark``."""
        return bool(self._rows("SELECT 1 FROM records WHERE variant=? AND benchmark=? LIMIT 1", (variant, benchmark)))

    def request(self, variant: str, benchmark: str, key: str) -> dict[str, Any] | None:
        """The stored request (JSON object) of one key; None when absent or unreadable."""
        rows = self._rows("SELECT request FROM records WHERE variant=? AND benchmark=? AND key=?", (variant, benchmark, key))
        return self._json(rows[0][0]) if rows else None

    def response(self, variant: str, benchmark: str, key: str) -> dict[str, Any] | None:
        """The stored answer (JSON object) of one key; None when absent or unreadable."""
        rows = self._rows("SELECT response FROM records WHERE variant=? AND benchmark=? AND key=?", (variant, benchmark, key))
        return self._json(rows[0][0]) if rows else None

    def first_requests(self, variant: str, benchmark: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """(key, request) of the first ``limit`` records by key (unreadable requests left out)."""
        rows = self._rows("SELECT key, request FROM records WHERE variant=? AND benchmark=? ORDER BY key LIMIT ?",
                          (variant, benchmark, int(limit)))
        out = []
        for key, rq in rows:
            req = self._json(rq)
            if req is not None:
                out.append((str(key), req))
        return out
