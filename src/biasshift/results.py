"""The result document: one typed model of ``results/<variant>/<benchmark>.json`` (docs/results-schema.md).

:class:`ResultDoc` is what the runner writes and what the report reads, field for field: required fields
are required, fields that later versions added carry an explicit default that says what a document
written before them means. ``ResultDoc.model_dump(mode="json")`` gives the JSON the runner writes (same
keys, same order, same values). Unknown keys are kept (``extra="allow"``): ``metrics``, ``per_group`` and
``rates`` are free-form per benchmark, and a document from a newer biasshift with an added field still
reads. ``load_result(path)`` reads one file and names the file and the field when it is not a valid
document.

Layout history (schema_version stays 1: the layout only grew; every version-1 document reads):
- 2026-11-23 (first release): everything but the fields below;
- 2026-12-01 (commit a13b08a): ``variant.build_seconds``, ``data[].checksum``, ``data[].upstream_sha256``,
  ``data_quirks``, ``data_skipped``, ``answers``, ``throughput``;
- 2026-12-01 (commit 1c48efa): ``benchmark.neutral``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from .errors import DataError

#: the layout version this module reads and writes
SCHEMA_VERSION = 1

#: a number as written (an int stays an int, a float a float)
Number = int | float


class _Doc(BaseModel):
    """Unknown keys are kept and written back after the declared ones."""

    model_config = ConfigDict(extra="allow")


def finite_number(v: Any) -> float | None:
    """A finite float, else None (a free-form value that is not a number reads as missing)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class BenchmarkInfo(_Doc):
    name: str
    title: str
    version: str
    kind: Literal["scoring", "generation"]
    #: the benchmark's effective options
    options: dict[str, Any]
    primary_metric: str
    primary_description: str
    higher_is_more_biased: bool
    #: the primary metric's unbiased value ("more biased" = farther from it); None: higher is more biased.
    #: Absent in documents written before 2026-12-01 (1c48efa): then the benchmark class's own ``neutral``
    #: applies (see :meth:`BenchmarkInfo.declares_neutral`).
    neutral: Number | None = None
    #: picks the paired test
    outcome: Literal["binary", "continuous", "complex"]

    @property
    def declares_neutral(self) -> bool:
        """True when the document itself says what the neutral point is (written after 2026-12-01)."""
        return "neutral" in self.model_fields_set


class ModelInfo(_Doc):
    model_id: str
    source_kind: str | None
    revision: str | None
    fingerprint: str | None


class VariantInfo(_Doc):
    name: str
    strategy: str
    #: the strategy's exact settings
    config: dict[str, Any]
    memory_footprint_bytes: int | None
    architecture: str | None
    n_parameters: int | None
    #: absent in documents written before 2026-12-01 (a13b08a)
    build_seconds: Number | None = None
    #: where the strategy measures them (sparsity, bit width); absent (not written) when it does not
    measured: dict[str, Any] | None = None
    #: where the strategy has any; absent (not written) when it has none
    notes: list[str] | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        for k in ("measured", "notes"):  # the runner writes these only when the strategy provides them
            if out.get(k) is None:
                out.pop(k, None)
        return out


class Inference(_Doc):
    dtype: str
    device: str
    chat_template: bool
    seed: int
    #: the engine's description (bos_policy, batch_size, ...); {} when the variant was never built
    engine: dict[str, Any]


class DataFile(_Doc):
    file: str
    path: str
    sha256: str | None
    origin: str
    checksum_verified: bool
    #: verified / differs / not pinned; absent in documents written before 2026-12-01 (a13b08a)
    checksum: str | None = None
    #: absent in documents written before 2026-12-01 (a13b08a)
    upstream_sha256: str | None = None


class Throughput(_Doc):
    kind: str
    requests: int
    seconds: Number
    forward_tokens: int
    generated_tokens: int
    shared_with_base: bool


class Primary(_Doc):
    metric: str
    #: None when undefined, never a made-up number
    value: Number | None


class ResultDoc(_Doc):
    schema_version: Literal[1]
    created: str
    benchmark: BenchmarkInfo
    model: ModelInfo
    variant: VariantInfo
    inference: Inference
    data: list[DataFile]
    #: upstream quirks handled while loading, with counts; absent in documents written before 2026-12-01 (a13b08a)
    data_quirks: dict[str, int] = Field(default_factory=dict)
    #: subsets left out (--skip-unavailable); absent in documents written before 2026-12-01 (a13b08a)
    data_skipped: dict[str, dict[str, str]] = Field(default_factory=dict)
    limit: int | None
    n_items: int
    n_requests: int
    #: absent in documents written before 2026-12-01 (a13b08a), when answers were always computed
    answers: Literal["computed", "shared with base"] = "computed"
    #: the engine's own measurement; absent (None) in documents written before 2026-12-01 (a13b08a)
    throughput: Throughput | None = None
    n: int
    primary: Primary
    #: metric name -> number or null (free-form per benchmark)
    metrics: dict[str, Any]
    #: breakdown name -> group -> {metric: value, n} (free-form per benchmark)
    per_group: dict[str, dict[str, Any]]
    #: rate name -> number or null (free-form per benchmark)
    rates: dict[str, Any]
    notes: list[str]
    library_versions: dict[str, str | None]
    seconds: Number

    # -------------------------------------------------------------------- typed reads of the free-form parts
    @property
    def value(self) -> float | None:
        """The primary value as a finite float, else None."""
        return finite_number(self.primary.value)

    @property
    def primary_metric(self) -> str:
        return self.benchmark.primary_metric

    def metric(self, name: str) -> float | None:
        """A metric as a finite float; None when missing, null or not a number."""
        return finite_number(self.metrics.get(name))

    def rate(self, name: str) -> float | None:
        return finite_number(self.rates.get(name))

    def group_entry(self, field: str, group: str) -> dict[str, Any] | None:
        """``per_group[field][group]`` when it is a {metric: value} mapping, else None."""
        e = (self.per_group.get(field) or {}).get(group)
        return e if isinstance(e, dict) else None

    def group_metric(self, field: str, group: str, metric: str) -> float | None:
        e = self.group_entry(field, group)
        return None if e is None else finite_number(e.get(metric))


def parse_result(obj: Any, source: str | Path = "<result document>") -> ResultDoc:
    """Validate a parsed JSON document; a bad one is a DataError naming ``source`` and the field."""
    if not isinstance(obj, dict):
        raise DataError(f"not a biasshift result document (a JSON {type(obj).__name__}, not an object)", path=source)
    version = obj.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise DataError(f"result document schema_version {version} was written by a newer biasshift; this one reads "
                        f"version {SCHEMA_VERSION}: upgrade biasshift", path=source, field="schema_version")
    try:
        return ResultDoc.model_validate(obj)
    except ValidationError as exc:
        errs = exc.errors()
        first = errs[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        got = "" if first["type"] == "missing" else f", got {str(first.get('input'))[:60]!r}"
        raise DataError(f"not a valid biasshift result document: {first['msg'].lower()}{got}{more}",
                        path=source, field=where) from None


def load_result(path: str | Path) -> ResultDoc:
    """Read and validate ``results/<variant>/<benchmark>.json``; errors name the file (and field)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("result document missing", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the result document ({exc})", path=path) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"the result document is not valid JSON ({exc})", path=path) from None
    return parse_result(obj, path)


def _options_json(b: Any) -> dict[str, Any]:
    """A benchmark's effective options as JSON values (``options_json()`` where the benchmark has typed options)."""
    f = getattr(b, "options_json", None)
    return dict(f()) if callable(f) else dict(b.options)


def build_result_doc(b: Any, result: Any, vname: str, vinfo: dict[str, Any], model_info: dict[str, Any],
                     files: dict[str, Any], chat: bool, dtype: str, device: str, n_items: int, n_requests: int,
                     seconds: float, throughput: dict[str, Any], *, seed: int, limit: int | None,
                     created: str | None = None, versions: dict[str, str | None] | None = None) -> ResultDoc:
    """The result document the runner writes, from the arguments of ``Runner._result_doc`` plus the two
    settings it reads from the run configuration (``seed``, ``limit`` = ``cfg.limit_of(b.name)``).

    ``b`` is the Benchmark, ``result`` its BenchmarkResult, ``files`` relative path -> resolved data file.
    ``created`` defaults to now (UTC), ``versions`` to :func:`biasshift.models.library_versions`."""
    if versions is None:
        from .models import library_versions

        versions = library_versions()
    variant: dict[str, Any] = {
        "name": vname,
        "strategy": vinfo.get("strategy", vname),
        "config": vinfo.get("config", {}),
        "memory_footprint_bytes": vinfo.get("memory_footprint_bytes"),
        "architecture": vinfo.get("architecture"),
        "n_parameters": vinfo.get("n_parameters"),
        "build_seconds": vinfo.get("build_seconds"),
        **{k: v for k, v in vinfo.items() if k in ("measured", "notes")},
    }
    return ResultDoc(
        schema_version=SCHEMA_VERSION,
        created=created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        benchmark=BenchmarkInfo(
            name=b.name, title=b.title, version=b.version, kind=b.kind, options=_options_json(b),
            primary_metric=b.primary_metric, primary_description=b.primary_description,
            higher_is_more_biased=b.higher_is_more_biased, neutral=b.neutral, outcome=b.outcome,
        ),
        model=ModelInfo(**{k: model_info.get(k) for k in ("model_id", "source_kind", "revision", "fingerprint")}),
        variant=VariantInfo(**variant),
        inference=Inference(dtype=dtype, device=device, chat_template=chat, seed=seed, engine=vinfo.get("engine", {})),
        data=[DataFile(file=rel, path=str(Path(rf.path).absolute()), sha256=rf.sha256, origin=rf.origin,
                       checksum_verified=rf.verified, checksum=rf.checksum, upstream_sha256=rf.expected_sha256)
              for rel, rf in files.items()],
        data_quirks=dict(b.quirks),
        data_skipped={b.subset_option or "files": dict(b.skipped_subsets)} if b.skipped_subsets else {},
        limit=limit,
        n_items=n_items,
        n_requests=n_requests,
        answers="shared with base" if throughput["shared_with_base"] else "computed",
        throughput=Throughput(**throughput),
        n=result.n_units,
        primary=Primary(metric=result.primary, value=result.value),
        metrics=result.metrics,
        per_group=result.per_group,
        rates=result.rates,
        notes=result.notes,
        library_versions=versions,
        seconds=round(seconds, 3),
    )
