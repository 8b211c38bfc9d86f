"""Orchestration: config -> variants -> requests -> engine (batched, stored) -> units -> results.

Layout of a run directory (docs/results-schema.md):
    config.json                          the run configuration as given
    store.sqlite                         every request and answer (resumable)
    results/<variant>/<benchmark>.json   one result document per variant x benchmark
    units/<variant>/<benchmark>.jsonl    the per-unit records the metrics were computed from
    summary.json                         the primary score of every variant x benchmark
"""

from __future__ import annotations

import functools
import gc
import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from . import benchmarks as bench_registry
from . import strategies as strat_registry
from .benchmarks.base import Benchmark, BenchmarkResult, Item, RequestContext
from .data import is_available, resolve
from .engine.hf import HFEngine, anchored_tokenize
from .engine.requests import Keyed, Prompt
from .errors import ConfigError, DataError, StoreError
from .models import ModelSpec, library_versions, load_tokenizer, materialise, resolve_device, resolve_dtype, dtype_name
from .models import check_weight_files
from .store import RunStore
from . import rundir
from .lock import RunLock

RESULT_SCHEMA_VERSION = 1
_DEBUG_DELAY = float(os.environ.get("BIASSHIFT_DEBUG_BATCH_DELAY", "0") or 0)


class RunConfig(BaseModel):
    model: str
    revision: str | None = None
    strategies: list[str] = Field(default_factory=lambda: ["base"])
    benchmarks: list[str]
    limit: int | None = None
    #: per-benchmark limits overriding ``limit`` (``--limit-for BENCH=N``)
    limits: dict[str, int] = Field(default_factory=dict)
    batch_size: int | Literal["auto"] = "auto"
    max_batch_tokens: int | None = None
    compile: bool = False
    executor: Literal["local", "ray"] = "local"
    device: str = "auto"
    dtype: str = "auto"
    chat_template: Literal["auto", "on", "off"] = "auto"
    bos: Literal["auto", "always", "never"] = "auto"
    out: Path
    data_dir: Path | None = None
    seed: int = 0
    trust_remote_code: bool = False
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    skip_unavailable: bool = False
    # strategy settings (docs/strategies.md)
    calib_data: str = "c4"
    calib_samples: int = 128
    calib_seqlen: int = 2048
    quantize_prompt_cache: bool = False
    strategy_checkpoints: dict[str, str] = Field(default_factory=dict)
    #: take answers a variant provably shares with base (kv* on scoring) from base instead of recomputing
    share_base_answers: bool = True

    def limit_of(self, benchmark: str) -> int | None:
        return self.limits.get(benchmark, self.limit)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.revision, self.dtype, self.device, self.trust_remote_code)

    def strategy_settings(self, progress: bool = False) -> strat_registry.StrategySettings:
        return strat_registry.StrategySettings(
            seed=self.seed,
            calib_data=self.calib_data,
            calib_samples=self.calib_samples,
            calib_seqlen=self.calib_seqlen,
            quantize_prompt_cache=self.quantize_prompt_cache,
            checkpoints=dict(self.strategy_checkpoints),
            progress=progress,
        )


def make_renderer(tokenizer: Any, chat: bool) -> Callable[[Prompt], str]:
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("--chat-template on, but this tokenizer has no chat template")

    def render(p: Prompt) -> str:
        if chat and p.messages:
            msgs = [{"role": r, "content": c} for r, c in p.messages]
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + p.prefix
        return p.text

    return render


def _write_json(path: Path, obj: Any) -> None:
    rundir.write_json(path, obj)  # process-unique temporary name, atomic replace, DiskError on a full disk


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    rundir.write_jsonl(path, rows)


class Runner:
    def __init__(self, cfg: RunConfig, console: Any = None, progress: bool = True, compute_only: bool = False) -> None:
        self.cfg = cfg
        self.console = console
        self.show_progress = progress
        self.out = Path(cfg.out)
        #: fill the store only (a worker of a distributed executor); the driver writes results and summary
        self.compute_only = compute_only

    def log(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg)

    # ------------------------------------------------------------------------------------------
    def prepare_benchmarks(self) -> tuple[list[tuple[Benchmark, dict[str, Any]]], dict[str, str]]:
        """Instantiate benchmarks and resolve the files each will read (local, else downloaded); returns
        (benchmarks, skipped name -> reason).

        A file that can be had neither locally nor by download is an error naming every place looked,
        unless ``skip_unavailable``: then the benchmark is skipped, or, for a benchmark made of independent
        subsets (BBQ categories, BOLD domains), only the subsets whose files are missing are left out and
        recorded. Without ``skip_unavailable`` such a benchmark says which subsets are missing and how to
        score the rest. Nothing at all to run is an error.
        """
        unknown = set(self.cfg.options) - set(self.cfg.benchmarks)
        if unknown:
            raise ConfigError(f"--option given for benchmark(s) not in this run: {', '.join(sorted(unknown))}")
        unknown = set(self.cfg.limits) - set(self.cfg.benchmarks)
        if unknown:
            raise ConfigError(f"--limit-for given for benchmark(s) not in this run: {', '.join(sorted(unknown))}")
        prepared, skipped = [], {}
        for name in self.cfg.benchmarks:
            cls = bench_registry.get(name)
            b = cls(self.cfg.options.get(name))
            b.prefer_local(lambda f: is_available(f, self.cfg.data_dir))
            files: dict[str, Any] = {}
            missing: dict[str, DataError] = {}
            for f in b.files():
                try:
                    files[f.rel] = resolve(f, self.cfg.data_dir)
                except DataError as exc:
                    missing[f.rel] = exc
            if missing:
                subsets = [s for s in b.subsets() if b.subset_files[s].rel in missing]
                have = [s for s in b.subsets() if s not in subsets]
                if not self.cfg.skip_unavailable:
                    first = next(iter(missing.values()))
                    if subsets and have:
                        raise DataError(
                            f"{name}: the files of {len(subsets)} of its {len(subsets) + len(have)} {b.subset_option} "
                            f"cannot be had ({', '.join(subsets)}). Pass --skip-unavailable to score the other "
                            f"{len(have)}, or --option {name}.{b.subset_option}={','.join(have)}. First problem: {first}"
                        )
                    raise first
                if subsets and have:
                    b.drop_subsets(subsets)
                    b.skipped_subsets = {s: "data file not available (neither local nor downloadable)" for s in subsets}
                    for rel in missing:
                        files.pop(rel, None)
                    self.log(f"[yellow]{name}: left out {b.subset_option} {', '.join(subsets)} (data not available); "
                             f"scoring {', '.join(have)}[/yellow]")
                else:
                    skipped[name] = f"data not available: {', '.join(missing)}"
                    continue
            for rel, rf in files.items():
                w = rf.warning(rel)
                if w:
                    self.log(f"[yellow]warning: {w}[/yellow]")
            prepared.append((b, files))
        if not prepared:
            raise DataError("nothing to run: no benchmark's data could be found locally or downloaded ("
                            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                            + "). Pass --data-dir (docs/data.md) or run where the upstream sources can be reached")
        return prepared, skipped

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
        if not self.compute_only:
            rundir.check_out(self.out)
        strategies = strat_registry.prepare(cfg.strategies, cfg.strategy_settings(self.show_progress))
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        spec = cfg.spec()
        path, model_info = materialise(spec)
        if not self.compute_only:
            rundir.check_out_vs_model(self.out, path, cfg.model)
        base_tok = load_tokenizer(path, spec)
        check_weight_files(path)
        context = rundir.model_context(path, base_tok)
        prepared, skipped = self.prepare_benchmarks()
        for name, why in skipped.items():
            self.log(f"[yellow]skipped {name}: {why}[/yellow]")
        # items and rendered requests, computed once with the base tokenizer (shared by every variant)
        plan: list[tuple[Benchmark, dict[str, Any], list[Item], list[Keyed], bool]] = []
        for b, files in prepared:
            rundir.validate_options(b)
            chat = b.chat_template_default if cfg.chat_template == "auto" else cfg.chat_template == "on"
            ctx = RequestContext(render=make_renderer(base_tok, chat), seed=cfg.seed, chat_template=chat,
                                 tokenize=anchored_tokenize(base_tok))
            items = b.select(b.load({rel: rf.path for rel, rf in files.items()}), cfg.limit_of(b.name), cfg.seed)
            reqs = [r for it in items for r in b.requests(it, ctx)]
            keys = [r.key for r in reqs]
            if len(set(keys)) != len(keys):
                raise DataError(f"benchmark {b.name} produced duplicate request keys (duplicate rows in the data?)")
            rundir.check_prompt_lengths(b.name, reqs, base_tok, context)
            plan.append((b, files, items, reqs, chat))
        if not plan:
            raise ConfigError("nothing to run: every requested benchmark was skipped ("
                              + "; ".join(f"{n}: {w}" for n, w in skipped.items()) + "). Provide the data (--data-dir)")
        # validation passed: only now is anything written into the run directory, under its lock
        if not self.compute_only:
            rundir.make_dir(self.out)
            self._lock = RunLock(self.out).acquire()
            rundir.check_store_file(self.out)
        store = self._store = RunStore(self.out / "store.sqlite")
        store.check_identity(
            {"model_fingerprint": model_info["fingerprint"], "dtype": dtype_name(dtype), "seed": cfg.seed, "bos": cfg.bos}
        )
        rundir.check_variants_against_store(store, strategies, self.out)
        if not self.compute_only:
            _write_json(self.out / "config.json", rundir.merged_config(self.out, json.loads(cfg.model_dump_json())))

        summary: dict[str, Any] = {"model": model_info, "variants": {}, "skipped": {}}
        previous = self.out / "summary.json"
        if previous.is_file():  # keep what earlier invocations on this run directory reported
            try:
                old = json.loads(previous.read_text())
                summary["variants"] = old.get("variants", {})
                summary["skipped"] = old.get("skipped", {})
            except (ValueError, AttributeError):  # damaged: rebuild what it said from the result documents
                summary["variants"] = rundir.summary_from_results(self.out)
        else:  # an earlier invocation may have been killed before writing it
            summary["variants"] = rundir.summary_from_results(self.out)
        for name in [b.name for b, *_ in plan]:
            summary["skipped"].pop(name, None)
        summary["skipped"].update(skipped)
        shared_map = shared_with_base(cfg, strategies, plan)
        if cfg.executor == "ray" and not self.compute_only:  # fill the store on Ray workers, then report below
            from .executors import run_ray

            run_ray(self, store, plan, strategies, shared_map)
        # base first: other variants may take its answers (shared_with_base)
        for vname in sorted(cfg.strategies, key=lambda v: v != BASE):
            strategy = strategies[vname]
            stored_request = store.variants().get(vname, {}).get("requested")
            if stored_request is not None and stored_request != strategy.requested():
                raise StoreError(
                    f"the run directory {self.out} holds results of variant {vname} built with other settings "
                    f"(stored {stored_request['config']}, now {strategy.requested()['config']}). Use a new --out "
                    "directory, or the original settings to resume"
                )
            shared = shared_map.get(vname, set())
            for b, _, _, reqs, _ in plan:
                if b.name in shared:
                    n = store.copy_answers(BASE, vname, b.name, reqs)
                    store.set_meta(_shared_key(vname, b.name), {"from": BASE, "n_answers": len(reqs)})
                    if n:
                        self.log(f"  {vname:>10} {b.name:<20} {n} answers shared with base (not recomputed: "
                                 f"{vname} cannot change scoring requests)")
            pending = {b.name: len(reqs) - len(store.done(vname, b.name, reqs)) for b, _, _, reqs, _ in plan}
            variant = None
            engine = None
            if any(pending.values()):
                self.log(f"building variant [bold]{vname}[/bold] ...")
                tb = time.time()
                variant = strategy.build(spec)
                engine = HFEngine(
                    variant.model,
                    variant.tokenizer,
                    batch_size=cfg.batch_size,
                    bos_policy=cfg.bos,
                    cache_factory=variant.cache_factory,
                    quantize_prompt_cache=variant.quantize_prompt_cache,
                    max_batch_tokens=cfg.max_batch_tokens,
                    compile=cfg.compile,
                )
                info = {**variant.info, "engine": engine.describe(), "build_seconds": round(time.time() - tb, 2)}
                store.set_variant(vname, info)
            elif vname not in store.variants():  # never built: every answer shared with base
                base_info = store.variants().get(BASE, {})
                store.set_variant(vname, {
                    "strategy": vname, "config": strategy.config(), "requested": strategy.requested(),
                    "built": False,
                    # a KV-cache setting keeps the base weights: the weights' footprint is base's
                    "memory_footprint_bytes": base_info.get("memory_footprint_bytes"),
                    "architecture": base_info.get("architecture"), "n_parameters": base_info.get("n_parameters"),
                    "measured": {}, "build_seconds": 0.0,
                    "notes": ["not built: every answer of this run was shared with the base variant; memory "
                              "footprint = the base weights' (its KV cache is quantized only when it generates)"],
                })
            vinfo = store.variants().get(vname, {})
            summary["variants"].setdefault(vname, {})
            for b, files, items, reqs, chat in plan:
                t_b = time.time()
                if pending[b.name]:
                    assert engine is not None
                    done = store.done(vname, b.name, reqs)
                    with self._progress(f"{vname} · {b.name}", len(reqs), len(done)) as advance:
                        engine.progress = advance
                        before = (engine.stats.forward_tokens, engine.stats.generated_tokens)
                        te = time.perf_counter()
                        engine.run(reqs, functools.partial(self._commit, store, vname, b.name), done=done)
                        _add_throughput(store, vname, b.name, reqs, len(reqs) - len(done), time.perf_counter() - te,
                                        engine.stats.forward_tokens - before[0], engine.stats.generated_tokens - before[1])
                if self.compute_only:
                    continue
                responses = store.responses(vname, b.name)
                units = b.units(items, responses)
                result = b.compute(units)
                throughput = _throughput_doc(store, vname, b.name, reqs)
                doc = self._result_doc(b, result, vname, vinfo, model_info, files, chat, dtype_name(dtype), str(device),
                                       len(items), len(reqs), time.time() - t_b, throughput)
                _write_json(self.out / "results" / vname / f"{b.name}.json", doc)
                _write_jsonl(self.out / "units" / vname / f"{b.name}.jsonl", units)
                summary["variants"][vname][b.name] = {"metric": result.primary, "value": result.value, "n_units": result.n_units,
                                                      **({"shared_with_base": True} if throughput["shared_with_base"] else {})}
                tag = "  (answers shared with base)" if throughput["shared_with_base"] else ""
                self.log(f"  {vname:>10} {b.name:<20} {result.primary} = {_fmt(result.value)}  (n={result.n_units}){tag}")
            if variant is not None:
                del variant, engine
                gc.collect()
                try:
                    import torch

                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                except ImportError:  # pragma: no cover
                    pass
        summary["seconds"] = round(time.time() - t0, 2)
        if not self.compute_only:
            _write_json(self.out / "summary.json", summary)
        store.close()
        return summary

    @staticmethod
    def _commit(store: RunStore, variant: str, benchmark: str, results: list) -> None:
        store.put_many(variant, benchmark, results)
        if _DEBUG_DELAY:  # testing aid: slow a run down so a test can kill it mid-way
            time.sleep(_DEBUG_DELAY)

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
        cfg = self.cfg
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "benchmark": {
                "name": b.name, "title": b.title, "version": b.version, "kind": b.kind, "options": b.options,
                "primary_metric": b.primary_metric, "primary_description": b.primary_description,
                "higher_is_more_biased": b.higher_is_more_biased, "neutral": b.neutral, "outcome": b.outcome,
            },
            "model": {k: model_info.get(k) for k in ("model_id", "source_kind", "revision", "fingerprint")},
            "variant": {
                "name": vname,
                "strategy": vinfo.get("strategy", vname),
                "config": vinfo.get("config", {}),
                "memory_footprint_bytes": vinfo.get("memory_footprint_bytes"),
                "architecture": vinfo.get("architecture"),
                "n_parameters": vinfo.get("n_parameters"),
                "build_seconds": vinfo.get("build_seconds"),
                **{k: v for k, v in vinfo.items() if k in ("measured", "notes")},
            },
            "inference": {
                "dtype": dtype, "device": device, "chat_template": chat, "seed": cfg.seed,
                "engine": vinfo.get("engine", {}),
            },
            "data": [{"file": rel, "path": str(Path(rf.path).absolute()), "sha256": rf.sha256, "origin": rf.origin, "checksum_verified": rf.verified,
                      "checksum": rf.checksum, "upstream_sha256": rf.expected_sha256}
                     for rel, rf in files.items()],
            "data_quirks": dict(b.quirks),
            "data_skipped": {b.subset_option or "files": dict(b.skipped_subsets)} if b.skipped_subsets else {},
            "limit": cfg.limit_of(b.name),
            "n_items": n_items,
            "n_requests": n_requests,
            "answers": "shared with base" if throughput["shared_with_base"] else "computed",
            "throughput": throughput,
            "n": result.n_units,
            "primary": {"metric": result.primary, "value": result.value},
            "metrics": result.metrics,
            "per_group": result.per_group,
            "rates": result.rates,
            "notes": result.notes,
            "library_versions": library_versions(),
            "seconds": round(seconds, 3),
        }


BASE = "base"


def shared_with_base(cfg: RunConfig, strategies: dict[str, Any], plan: list) -> dict[str, set[str]]:
    """Per variant, the benchmarks whose answers it takes from the base variant instead of computing them:
    every request of the benchmark is a scoring request (no generation) and the strategy provably leaves
    scoring unchanged (``Strategy.scoring_equals_base``: a KV-cache setting without --quantize-prompt-cache).
    Needs the base variant in the run; ``--no-share-base`` turns it off."""
    if BASE not in cfg.strategies or not cfg.share_base_answers:
        return {}
    scoring = {b.name for b, _, _, reqs, _ in plan if reqs and all(r.request.kind != "generate" for r in reqs)}
    return {v: set(scoring) for v, s in strategies.items() if v != BASE and scoring and s.scoring_equals_base()}


def _shared_key(variant: str, benchmark: str) -> str:
    return f"shared_with_base/{variant}/{benchmark}"


def _throughput_key(variant: str, benchmark: str) -> str:
    return f"throughput/{variant}/{benchmark}"


def _kind(reqs: list[Keyed]) -> str:
    kinds = {r.request.kind for r in reqs}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


def _add_throughput(store: RunStore, variant: str, benchmark: str, reqs: list[Keyed], n: int, seconds: float,
                    forward_tokens: int, generated_tokens: int) -> None:
    """Accumulate the engine's own measurements for the requests this variant computed (over resumes)."""
    old = store.get_meta(_throughput_key(variant, benchmark)) or {}
    store.set_meta(_throughput_key(variant, benchmark), {
        "kind": _kind(reqs),
        "requests": int(old.get("requests", 0)) + n,
        "seconds": round(float(old.get("seconds", 0.0)) + seconds, 4),
        "forward_tokens": int(old.get("forward_tokens", 0)) + forward_tokens,
        "generated_tokens": int(old.get("generated_tokens", 0)) + generated_tokens,
    })


def _throughput_doc(store: RunStore, variant: str, benchmark: str, reqs: list[Keyed]) -> dict[str, Any]:
    shared = store.get_meta(_shared_key(variant, benchmark)) is not None
    got = store.get_meta(_throughput_key(variant, benchmark)) or {}
    return {
        "kind": _kind(reqs),
        "requests": int(got.get("requests", 0)),
        "seconds": float(got.get("seconds", 0.0)),
        "forward_tokens": int(got.get("forward_tokens", 0)),
        "generated_tokens": int(got.get("generated_tokens", 0)),
        "shared_with_base": shared,
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
