"""Orchestration: config -> variants -> requests -> engine (batched, stored) -> units -> results.

Layout of a run directory (docs/results-schema.md):
    config.json                          the run configuration as given
    store.sqlite                         every request and answer (resumable)
    results/<variant>/<benchmark>.json   one result document per variant x benchmark
    units/<variant>/<benchmark>.jsonl    the per-unit records the metrics were computed from
    summary.json                         the primary score of every variant x benchmark
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .benchmarks.base import Benchmark, BenchmarkResult
from .config import RunConfig
from .errors import StoreError
from .executors import compute_variant, kind_of, run_ray
from .models import dtype_name, resolve_device, resolve_dtype
from .results import build_result_doc
from .plan import BASE, PreparedRun, make_renderer, prepare_run, shared_with_base
from .store import RunStore
from . import rundir
from .lock import RunLock


__all__ = ["BASE", "RunConfig", "Runner", "make_renderer", "shared_with_base"]


def _write_json(path: Path, obj: Any) -> None:
    rundir.write_json(path, obj)  # process-unique temporary name, atomic replace, DiskError on a full disk


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    rundir.write_jsonl(path, rows)


class Runner:
    """One ``biasshift run``: validate, plan, fill the store (an executor), write results and summary."""

    def __init__(self, cfg: RunConfig, console: Any = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.console = console
        self.show_progress = progress
        self.out = Path(cfg.out)

    def log(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg)

    def run(self) -> dict[str, Any]:
        """Validate everything, then take the run directory's lock (one writer) and run (docs/reliability.md)."""
        self._lock: RunLock | None = None
        self._store: RunStore | None = None
        try:
            return self._run()
        finally:
            if self._store is not None:  # closed on every exit, so SQLite removes its -wal/-shm files
                self._store.close()
            if self._lock is not None:
                self._lock.release()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.time()
        rundir.check_out(self.out)
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        run = prepare_run(cfg, self.log, self.show_progress,
                          check_model=lambda path: rundir.check_out_vs_model(self.out, path, cfg.model))
        plan = run.plan
        # validation passed: only now is anything written into the run directory, under its lock
        rundir.make_dir(self.out)
        self._lock = RunLock(self.out).acquire()
        rundir.check_store_file(self.out)
        store = self._store = RunStore(self.out / "store.sqlite")
        store.check_identity(
            {"model_fingerprint": run.model_info["fingerprint"], "dtype": dtype_name(dtype), "seed": cfg.seed, "bos": cfg.bos}
        )
        rundir.check_variants_against_store(store, plan.strategies, self.out)
        for vname in plan.variants:
            stored_request = store.variants().get(vname, {}).get("requested")
            now = plan.strategies[vname].requested()
            if stored_request is not None and stored_request != now:
                raise StoreError(
                    f"the run directory {self.out} holds results of variant {vname} built with other settings "
                    f"(stored {stored_request['config']}, now {now['config']}). Use a new --out "
                    "directory, or the original settings to resume"
                )
        _write_json(self.out / "config.json", rundir.merged_config(self.out, json.loads(cfg.model_dump_json())))
        summary = self._previous_summary(plan)
        summary["model"] = run.model_info
        if cfg.executor == "ray":  # fill the store on Ray workers; the local pass below then only shares
            run_ray(run, store, self.log)
        for vname in plan.variants:  # base first: other variants may take its answers
            compute_variant(run, store, vname, self.log, self._progress, log_dir=str(self.out))
            self._write_results(run, store, vname, summary, dtype_name(dtype), str(device))
        summary["seconds"] = round(time.time() - t0, 2)
        _write_json(self.out / "summary.json", summary)
        store.close()
        return summary

    def _previous_summary(self, plan: Any) -> dict[str, Any]:
        """The summary so far: what earlier invocations on this run directory reported, less what this one
        reruns."""
        summary: dict[str, Any] = {"model": None, "variants": {}, "skipped": {}}
        previous = self.out / "summary.json"
        if previous.is_file():
            try:
                old = json.loads(previous.read_text())
                summary["variants"] = old.get("variants", {})
                summary["skipped"] = old.get("skipped", {})
            except (ValueError, AttributeError):  # damaged: rebuild what it said from the result documents
                summary["variants"] = rundir.summary_from_results(self.out)
        else:  # an earlier invocation may have been killed before writing it
            summary["variants"] = rundir.summary_from_results(self.out)
        for bp in plan.benchmarks:
            summary["skipped"].pop(bp.name, None)
        summary["skipped"].update(plan.skipped)
        return summary

    def _write_results(self, run: PreparedRun, store: RunStore, vname: str, summary: dict[str, Any], dtype: str,
                       device: str) -> None:
        """Units, metrics and the result document of every benchmark of ``vname``, from the store alone."""
        vinfo = store.variants().get(vname, {})
        summary["variants"].setdefault(vname, {})
        for bp in run.plan.benchmarks:
            t_b = time.time()
            b = bp.benchmark
            units = b.units(bp.items, store.responses(vname, b.name))
            result = b.compute(units)
            throughput = store.throughput(vname, b.name, kind_of(bp.requests))
            doc = self._result_doc(b, result, vname, vinfo, run.model_info, bp.files, bp.chat, dtype, device,
                                   len(bp.items), len(bp.requests), time.time() - t_b, throughput)
            _write_json(self.out / "results" / vname / f"{b.name}.json", doc)
            _write_jsonl(self.out / "units" / vname / f"{b.name}.jsonl", units)
            summary["variants"][vname][b.name] = {"metric": result.primary, "value": result.value, "n_units": result.n_units,
                                                  **({"shared_with_base": True} if throughput["shared_with_base"] else {})}
            tag = "  (answers shared with base)" if throughput["shared_with_base"] else ""
            self.log(f"  {vname:>10} {b.name:<20} {result.primary} = {_fmt(result.value)}  (n={result.n_units}){tag}")

    def _progress(self, label: str, total: int, done: int):
        if not self.show_progress or self.console is None:
            return nullcontext(None)
        if not self.console.is_terminal:  # logs: one line per ~10% instead of a bar
            state = {"done": done, "next": done + max(1, total // 10), "t0": time.time()}

            def advance(n: int) -> None:
                state["done"] += n
                if state["done"] >= state["next"] or state["done"] >= total:
                    state["next"] = state["done"] + max(1, total // 10)
                    rate = (state["done"] - done) / max(1e-9, time.time() - state["t0"])
                    self.log(f"  {label}: {state['done']}/{total} requests ({rate:.1f}/s)")

            return nullcontext(advance)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        class _Ctx:
            def __enter__(s):
                s.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               TimeRemainingColumn(), console=self.console, transient=False)
                s.p.start()
                s.t = s.p.add_task(label, total=total, completed=done)
                return lambda n: s.p.advance(s.t, n)

            def __exit__(s, *exc):
                s.p.stop()

        return _Ctx()

    def _result_doc(self, b: Benchmark, result: BenchmarkResult, vname: str, vinfo: dict[str, Any],
                    model_info: dict[str, Any], files: dict[str, Any], chat: bool, dtype: str, device: str,
                    n_items: int, n_requests: int, seconds: float, throughput: dict[str, Any]) -> dict[str, Any]:
        """The result document (``results.ResultDoc``, the model the report reads) as JSON."""
        return build_result_doc(b, result, vname, vinfo, model_info, files, chat, dtype, device, n_items, n_requests,
                                seconds, throughput, seed=self.cfg.seed,
                                limit=self.cfg.limit_of(b.name)).model_dump(mode="json")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
