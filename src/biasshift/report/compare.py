"""Build the base-vs-variant comparison report of one or more run directories (docs/report.md).

For every run directory x benchmark x metric x variant (variant != base) one :class:`Comparison` row
with the base and variant values, the change, a paired bootstrap CI and the paired test the
benchmark's ``outcome`` picks; Holm's correction runs over every p-value of the table (all runs,
benchmarks, metrics and variants). This module only orchestrates the layers:

- :mod:`.load`: run directories -> typed result documents (:class:`~biasshift.results.ResultDoc`) and
  unit records per variant x benchmark;
- :mod:`.model`: the typed records (:class:`Comparison`, :class:`ValueRow`, :class:`Report`, ...);
- :mod:`.paired`: the pure paired comparison (unit records + documents -> a filled Comparison), with
  the statistics of :mod:`biasshift.stats` and the vectorised evaluators of :mod:`.fast`;
- :mod:`.describe`: descriptive rows (per group, rates, text) and sample generations;
- renderers: :mod:`.render` (terminal, Markdown, CSV, JSON), :mod:`.html`.

The names the rest of biasshift and its tests import from here are re-exported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import BiasshiftError, ConfigError
from ..stats import holm, relative_change
from . import fast, integrity
from .describe import samples as _samples
from .describe import value_rows as _value_rows
from .load import BASE, BenchData, RunData, load_run, load_runs
from ..results import finite_number as _num
from .load import read_units as _read_units
from .model import REPORT_SCHEMA, Comparison, Report, RunInfo, Sample, ValueRow
from .paired import PER_GROUP_COMPARED, _bench_instance, _is_quality, compare_units, group_units, neutral_of, \
    unit_groups, why_undefined

__all__ = [
    "BASE", "REPORT_SCHEMA", "BenchData", "Comparison", "PER_GROUP_COMPARED", "Report", "RunData", "RunInfo", "Sample",
    "ValueRow", "build_report", "fast", "load_run", "load_runs", "neutral_of", "parse_metric_specs", "why_undefined",
    "_bench_instance", "_num", "_read_units", "_samples", "_value_rows",
]


# ----------------------------------------------------------------------------------------------- metric specs
# ----------------------------------------------------------------------------------------------- metric specs
def parse_metric_specs(specs: Iterable[str] | None) -> list[tuple[str, str | None]]:
    """``BENCH`` or ``BENCH.METRIC`` strings -> [(bench, metric or None for the primary)]."""
    out: list[tuple[str, str | None]] = []
    for s in specs or []:
        for part in str(s).split(","):
            part = part.strip()
            if not part:
                continue
            bench, _, metric = part.partition(".")
            if not bench:
                raise ConfigError(f"--metric must look like BENCHMARK or BENCHMARK.METRIC, not {part!r}")
            item = (bench, metric or None)
            if item not in out:
                out.append(item)
    return out


def _resolve_specs(runs: list[RunData], specs: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    """Validate specs against the runs; returns bench -> extra metric names (primary resolved)."""
    present: dict[str, set[str]] = {}
    primaries: dict[str, str] = {}
    for run in runs:
        for vd in run.variants.values():
            for name, bd in vd.items():
                present.setdefault(name, set()).update(bd.doc.metrics)
                primaries.setdefault(name, bd.info.primary_metric)
    out: dict[str, list[str]] = {}
    for bench, metric in specs:
        if bench not in present:
            raise ConfigError(f"--metric {bench}: no such benchmark in the run directories "
                              f"(present: {', '.join(sorted(present)) or 'none'})")
        m = metric or primaries[bench]
        if m not in present[bench]:
            raise ConfigError(f"--metric {bench}.{m}: {bench} has no metric {m!r} "
                              f"(metrics: {', '.join(sorted(present[bench]))})")
        out.setdefault(bench, [])
        if m not in out[bench]:
            out[bench].append(m)
    return out


# ----------------------------------------------------------------------------------------------- orchestration
def _values_only(row: Comparison, why: str) -> None:
    """The documents' own values, no statistics (``why`` says what is missing)."""
    row.base, row.value = row.base_reported, row.value_reported
    row.change = None if row.base is None or row.value is None else row.value - row.base
    row.rel_change = relative_change(row.base, row.value)
    row.ci_reason = row.test_reason = why


def _run_stats(row: Comparison, *args: Any, **kwargs: Any) -> None:
    """``compare_units(row, *args, **kwargs)``; a benchmark's compute failing on a resample must not kill the report."""
    try:
        compare_units(row, *args, **kwargs)
    except BiasshiftError:
        raise
    except Exception as exc:
        row.ci_reason = row.ci_reason or f"statistics failed: {type(exc).__name__}: {exc}"
        row.test_reason = row.test_reason or f"statistics failed: {type(exc).__name__}: {exc}"


def _benchmark_info(bd: BenchData) -> dict[str, Any]:
    """What the renderers show about a benchmark (Report.benchmarks), from its result document."""
    info = bd.info
    pm = info.primary_metric
    return {
        "title": info.title, "kind": info.kind, "primary_metric": pm, "primary_description": info.primary_description,
        "higher_is_more_biased": info.higher_is_more_biased, "neutral": neutral_of(bd.doc, pm), "outcome": info.outcome,
        "quality": _is_quality(bd.doc),
    }


def _compare_benchmark(run: RunData, b: str, binfo: dict[str, Any], metric_list: list[str], n_boot: int, n_perm: int,
                       seed: int, confidence: float, log: Callable[[str], None] | None) -> list[Comparison]:
    """Every comparison row of one benchmark of one run (each variant x metric, and per group where compared)."""
    rows: list[Comparison] = []
    base_bd = run.variants.get(BASE, {}).get(b)
    any_bd = base_bd or next(vd[b] for vd in run.variants.values() if b in vd)
    info = any_bd.info
    pm = info.primary_metric
    bench, why = _bench_instance(any_bd.doc)
    for v in run.compared_variants:
        var_bd = run.variants[v].get(b)
        for m in metric_list:
            row = Comparison(
                model=run.label, run_dir=str(run.path), benchmark=b, title=info.title, metric=m, primary=(m == pm),
                variant=v, outcome=info.outcome, higher_is_more_biased=info.higher_is_more_biased,
                confidence=confidence, quality=binfo["quality"],
                base_reported=base_bd.metric(m) if base_bd else None,
                value_reported=var_bd.metric(m) if var_bd else None,
            )
            row.neutral = neutral_of(any_bd.doc, m)
            rows.append(row)
            if base_bd is None or var_bd is None:
                row.base, row.value = row.base_reported, row.value_reported
                row.ci_reason = row.test_reason = f"no {'base' if base_bd is None else v} result for {b}"
                continue
            if base_bd.units is None or var_bd.units is None:
                missing = base_bd.units_path if base_bd.units is None else var_bd.units_path
                _values_only(row, f"unit records missing ({missing}): values only, no statistics")
                continue
            if bench is None:
                _values_only(row, str(why))
                continue
            if base_bd.info.options != var_bd.info.options:
                row.notes.append(f"benchmark options differ between base and {v}; base's options are used to recompute")
            if log:
                log(f"comparing {run.label} · {v} · {b}.{m}")
            trusted = not base_bd.units_disagree and not var_bd.units_disagree
            ub, uv = base_bd.units, var_bd.units
            _run_stats(row, bench, base_bd.doc, ub, var_bd.doc, uv, n_boot, n_perm, seed, confidence, reuse_doc_values=trusted)
            grp_field = PER_GROUP_COMPARED.get(b)
            if m != pm or grp_field is None:
                continue
            for g in unit_groups(ub, grp_field):
                grow = Comparison(
                    model=run.label, run_dir=str(run.path), benchmark=b, title=info.title, metric=m, primary=False,
                    variant=v, outcome="complex", higher_is_more_biased=row.higher_is_more_biased,
                    confidence=confidence, quality=row.quality, neutral=row.neutral, group_field=grp_field, group=g,
                    base_reported=base_bd.doc.group_metric(grp_field, g, m),
                    value_reported=var_bd.doc.group_metric(grp_field, g, m),
                )
                rows.append(grow)
                gb, gv = group_units(ub, grp_field, g), group_units(uv, grp_field, g)
                _run_stats(grow, bench, base_bd.doc, gb, var_bd.doc, gv, n_boot, n_perm, seed, confidence,
                           reuse_doc_values=False)
    return rows


def build_report(
    run_dirs: Sequence[str | Path] | Sequence[RunData],
    metrics: Iterable[str] | None = None,
    n_boot: int = 2000,
    n_perm: int = 5000,
    seed: int = 0,
    alpha: float = 0.05,
    confidence: float = 0.95,
    samples: int = 3,
    log: Callable[[str], None] | None = None,
    diff_top: int = 10,
) -> Report:
    """Compare every variant with base in each run directory; Holm over the whole table."""
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    if n_boot < 1 or n_perm < 1:
        raise ConfigError("--n-boot and --n-perm must be >= 1")
    runs = list(run_dirs) if all(isinstance(r, RunData) for r in run_dirs) else load_runs(run_dirs)  # type: ignore[arg-type]
    extra = _resolve_specs(runs, parse_metric_specs(metrics))
    rows: list[Comparison] = []
    base_values: dict[tuple[str, str, str], float | None] = {}
    warnings: list[str] = []
    missing, more = integrity.annotate(runs)  # requested-but-missing results, units that disagree with documents
    warnings += more
    benches: dict[str, dict[str, Any]] = {}
    infos: list[RunInfo] = []
    pg: list[ValueRow] = []
    rates: list[ValueRow] = []
    text: list[ValueRow] = []
    smp: list[Sample] = []
    t0 = time.time()
    for run in runs:
        variant_info = {v: next(iter(bd.values())).doc.variant.model_dump(mode="json") for v, bd in run.variants.items()}
        infos.append(RunInfo(run.label, str(run.path), run.model_id, list(run.variants), run.benchmarks, run.skipped,
                             variant_info))
        if BASE not in run.variants:
            warnings.append(f"{run.path}: no base results, nothing to compare against")
        if not run.compared_variants:
            warnings.append(f"{run.label}: only the base model was run; the report shows base values only")
        for b in run.benchmarks:
            base_bd = run.variants.get(BASE, {}).get(b)
            any_bd = base_bd or next(vd[b] for vd in run.variants.values() if b in vd)
            binfo = benches.setdefault(b, _benchmark_info(any_bd))
            pm = any_bd.info.primary_metric
            metric_list = [pm] + [m for m in extra.get(b, []) if m != pm]
            for m in metric_list:
                base_values[(run.label, b, m)] = base_bd.metric(m) if base_bd else None
            rows += _compare_benchmark(run, b, binfo, metric_list, n_boot, n_perm, seed, confidence, log)
        a, b_, c = _value_rows(run)
        pg += a
        rates += b_
        text += c
        smp += _samples(run, samples)
    for r in rows:  # rows without statistics still get their distance from the neutral point, for reading
        if r.neutral is not None and r.dist_base is None and r.base is not None and r.value is not None:
            r.dist_base, r.dist_value = abs(r.base - r.neutral), abs(r.value - r.neutral)
            r.dist_change = r.dist_value - r.dist_base
            r.dist_rel_change = relative_change(r.dist_base, r.dist_value)
    adj = holm([r.p_value for r in rows])
    for r, p in zip(rows, adj):
        r.p_holm = p
        r.significant = p is not None and p < alpha
    settings = {
        "n_boot": n_boot, "n_perm": n_perm, "seed": seed, "alpha": alpha, "confidence": confidence,
        "holm_family_size": sum(1 for r in rows if r.p_value is not None),
        "seconds": round(time.time() - t0, 2),
    }
    from . import diff as diff_mod
    from . import efficiency as eff_mod

    rep = Report(infos, rows, pg, rates, text, smp, settings, benches, base_values, warnings)
    rep.missing = missing
    if diff_top > 0:
        rep.diffs = [d for run in runs for d in diff_mod.run_diffs(run, diff_top)]
    rep.efficiency, rep.tradeoffs = eff_mod.build(runs, rows)
    settings["diff_top"] = diff_top
    return rep
