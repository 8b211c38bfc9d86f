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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .engine.requests import Keyed, request_to_dict
from .errors import StoreError

SCHEMA_VERSION = 1


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class RunStore:
    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
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
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
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
        self.conn.execute("INSERT OR REPLACE INTO variants(name, info) VALUES (?, ?)", (name, _dumps(info)))

    def variants(self) -> dict[str, dict[str, Any]]:
        return {n: json.loads(i) for n, i in self.conn.execute("SELECT name, info FROM variants ORDER BY name")}

    # ---------------------------------------------------------------- records
    def done(self, variant: str, benchmark: str, items: Iterable[Keyed]) -> set[str]:
        """Keys of ``items`` already answered; raises if a stored request differs from the current one."""
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
        with self.conn:  # one transaction
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO records(variant, benchmark, key, item_id, request, response, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def responses(self, variant: str, benchmark: str) -> dict[str, dict[str, Any]]:
        return {
            k: json.loads(r)
            for k, r in self.conn.execute(
                "SELECT key, response FROM records WHERE variant=? AND benchmark=?", (variant, benchmark)
            )
        }

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
        return [
            {"variant": v, "benchmark": b, "key": k, "item_id": i, "request": json.loads(rq), "response": json.loads(rs)}
            for v, b, k, i, rq, rs in self.conn.execute(q, args)
        ]

    def count(self, variant: str | None = None, benchmark: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM records", []
        if variant is not None and benchmark is not None:
            q += " WHERE variant=? AND benchmark=?"
            args = [variant, benchmark]
        return int(self.conn.execute(q, args).fetchone()[0])
