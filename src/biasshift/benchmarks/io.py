"""Strict readers for upstream CSV / JSONL files: every problem names the file, row and field.

Row numbers are 1-based data rows (the CSV header is not counted; for JSONL, the line number).
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DataError

csv.field_size_limit(1 << 26)


def read_csv_rows(path: Path, required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"missing column(s) {', '.join(missing)}; the header has: {', '.join(h or '(unnamed)' for h in header)}",
                    path=path,
                    field=missing[0],
                )
            rows = []
            for i, row in enumerate(reader, start=1):
                if None in row:
                    raise DataError(f"row has {len(header) + len(row[None])} fields, the header {len(header)}", path=path, row=i)
                rows.append((i, row))
            return rows
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=path) from None


def read_jsonl(path: Path, required: Iterable[str]) -> list[tuple[int, dict[str, Any]]]:
    required = list(required)
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, row=i) from None
                if not isinstance(obj, dict):
                    raise DataError("expected a JSON object", path=path, row=i)
                for c in required:
                    if c not in obj or obj[c] is None:
                        raise DataError("missing value", path=path, row=i, field=c)
                rows.append((i, obj))
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=path) from None
    if not rows:
        raise DataError("no rows", path=path)
    return rows


def require_text(row: dict[str, Any], field: str, path: Path, lineno: int) -> str:
    v = row.get(field)
    if v is None or not str(v).strip():
        raise DataError("empty value", path=path, row=lineno, field=field)
    return str(v)


def literal(text: str, path: Path, lineno: int, field: str) -> Any:
    """A Python literal from a data cell, evaluated safely (never ``eval``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataError(f"cannot parse as a Python literal ({type(exc).__name__})", path=path, row=lineno, field=field) from None
