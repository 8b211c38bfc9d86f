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

from .engine.requests import Keyed, request_to_dict
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

    def put_many(self, variant: str, benchmark: str, results: list[tuple[Keyed, dict[str, Any]]]) -> None:
        if not results:
            return
        now = time.time()
        rows = [
            (variant, benchmark, it.key, it.item_id, _dumps(request_to_dict(it.request)), _dumps(resp), now)
            for it, resp in results
        ]
        with _guard(self.path, f"committing a batch of {variant}/{benchmark} to the store"), self._txn():
            self.conn.executemany(
                "INSERT OR REPLACE INTO records(variant, benchmark, key, item_id, request, response, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

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

    def responses(self, variant: str, benchmark: str) -> dict[str, dict[str, Any]]:
        with _guard(self.path, "reading the run store"):
            rows = self.conn.execute(
                "SELECT key, response FROM records WHERE variant=? AND benchmark=?", (variant, benchmark)
            ).fetchall()
        return {k: _loads(r, self.path, f"the answer of {variant}/{benchmark}/{k}") for k, r in rows}

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

    def count(self, variant: str | None = None, benchmark: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM records", []
        if variant is not None and benchmark is not None:
            q += " WHERE variant=? AND benchmark=?"
            args = [variant, benchmark]
        with _guard(self.path, "reading the run store"):
            return int(self.conn.execute(q, args).fetchone()[0])
