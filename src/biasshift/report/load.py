"""Load run directories: results/ -> one typed :class:`~biasshift.results.ResultDoc` per variant x
benchmark, units/ -> its unit records, config.json and summary.json as written (docs/report.md).

Nothing here computes a statistic. store.sqlite is not read here (the report reads it through
:class:`biasshift.store.StoreReader` where it needs item texts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import BiasshiftError, ConfigError
from ..results import BenchmarkInfo, ResultDoc, parse_result
from . import integrity

BASE = "base"


@dataclass
class BenchData:
    """One benchmark's result document and unit records for one variant of one run."""

    name: str
    doc: ResultDoc
    units: list[dict[str, Any]] | None  # None when the units file is missing
    units_path: Path
    #: set by integrity.annotate: the units do not reproduce the document's primary value
    units_disagree: bool = False

    @property
    def info(self) -> BenchmarkInfo:
        return self.doc.benchmark

    @property
    def value(self) -> float | None:
        return self.doc.value

    def metric(self, name: str) -> float | None:
        return self.doc.metric(name)


@dataclass
class RunData:
    path: Path
    label: str
    model_id: str
    config: dict[str, Any]  # config.json as written (RunConfig plus ``requested``)
    summary: dict[str, Any]  # summary.json as written
    variants: dict[str, dict[str, BenchData]]  # variant -> benchmark -> data

    @property
    def benchmarks(self) -> list[str]:
        order = [b for b in (self.config.get("benchmarks") or []) if isinstance(b, str)]
        seen = {b for v in self.variants.values() for b in v}
        return [b for b in order if b in seen] + sorted(seen - set(order))

    @property
    def compared_variants(self) -> list[str]:
        return [v for v in self.variants if v != BASE]

    @property
    def skipped(self) -> dict[str, str]:
        s = self.summary.get("skipped") if isinstance(self.summary, dict) else None
        return dict(s) if isinstance(s, dict) else {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BiasshiftError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BiasshiftError(f"{path} is not valid JSON ({exc})") from None


def read_units(path: Path) -> list[dict[str, Any]] | None:
    """The unit records of one units/<variant>/<benchmark>.jsonl; None when the file is missing."""
    if not path.exists():
        return None
    units = []
    seen: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BiasshiftError(f"cannot read unit records {path} ({exc}); rerun `biasshift run` on the directory") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            u = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BiasshiftError(f"{path} line {lineno} is not valid JSON ({exc})") from None
        if not isinstance(u, dict) or "unit" not in u:
            raise BiasshiftError(f"{path} line {lineno}: a unit record needs a 'unit' field")
        key = str(u["unit"])
        if key in seen:
            raise BiasshiftError(f"{path} line {lineno}: duplicate unit {key!r}")
        seen.add(key)
        units.append(u)
    return units


def read_doc(path: Path) -> ResultDoc:
    """One result document, validated; its benchmark name must be the plain name of its file."""
    obj = _read_json(path)
    if not isinstance(obj, dict) or "benchmark" not in obj:
        raise BiasshiftError(f"{path} is not a biasshift result document (no 'benchmark' field)")
    info = obj["benchmark"]
    # the name is checked before anything else: it must never make the report open another file
    integrity.check_doc_name(path, info.get("name", path.stem) if isinstance(info, dict) else None)
    return parse_result(obj, path)


def _short_model(model_id: str) -> str:
    if model_id.startswith(("/", ".", "~")) or os.sep in model_id and Path(model_id).exists():
        return Path(model_id).name or model_id
    return model_id


def load_run(path: str | Path) -> RunData:
    """Read a run directory (results/, units/, config.json, summary.json)."""
    path = Path(path)
    res = path / "results"
    if not path.is_dir():
        raise BiasshiftError(f"run directory {path} does not exist")
    if not res.is_dir():
        raise BiasshiftError(f"{path} is not a biasshift run directory (no results/ folder); run `biasshift run` first")
    config = _read_json(path / "config.json") if (path / "config.json").exists() else {}
    summary = _read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    config = config if isinstance(config, dict) else {}
    summary = summary if isinstance(summary, dict) else {}
    vdirs = sorted(p.name for p in res.iterdir() if p.is_dir())
    order = [v for v in (config.get("strategies") or []) if v in vdirs]
    order = ([BASE] if BASE in vdirs and BASE not in order else []) + order
    order += [v for v in vdirs if v not in order]
    variants: dict[str, dict[str, BenchData]] = {}
    for v in order:
        bd: dict[str, BenchData] = {}
        for f in sorted((res / v).glob("*.json")):
            doc = read_doc(f)
            name = doc.benchmark.name
            upath = path / "units" / v / f"{name}.jsonl"
            bd[name] = BenchData(name, doc, read_units(upath), upath)
        if bd:
            variants[v] = bd
    if not variants:
        raise BiasshiftError(f"{path} holds no result documents (results/<variant>/<benchmark>.json)")
    summary_model = summary.get("model")
    model_id = str(
        (summary_model.get("model_id") if isinstance(summary_model, dict) else None)
        or next((d.doc.model.model_id for vd in variants.values() for d in vd.values()), None)
        or config.get("model")
        or path.name
    )
    return RunData(path, _short_model(model_id), model_id, config, summary, variants)


def load_runs(paths: Sequence[str | Path]) -> list[RunData]:
    if not paths:
        raise ConfigError("give at least one run directory")
    runs = [load_run(p) for p in paths]
    labels = [r.label for r in runs]
    for r in runs:  # disambiguate equal model labels by the run directory's name, then by position
        if labels.count(r.label) > 1:
            r.label = f"{r.label} [{r.path.name}]"
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label} #{i + 1}"
    return runs
