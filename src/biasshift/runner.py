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
from .store import RunStore

RESULT_SCHEMA_VERSION = 1
_DEBUG_DELAY = float(os.environ.get("BIASSHIFT_DEBUG_BATCH_DELAY", "0") or 0)


class RunConfig(BaseModel):
    model: str
    revision: str | None = None
    strategies: list[str] = Field(default_factory=lambda: ["base"])
    benchmarks: list[str]
    limit: int | None = None
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


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
        """Instantiate benchmarks and resolve their data; returns (benchmarks, skipped name -> reason)."""
        unknown = set(self.cfg.options) - set(self.cfg.benchmarks)
        if unknown:
            raise ConfigError(f"--option given for benchmark(s) not in this run: {', '.join(sorted(unknown))}")
        prepared, skipped = [], {}
        for name in self.cfg.benchmarks:
            cls = bench_registry.get(name)
            b = cls(self.cfg.options.get(name))
            if self.cfg.skip_unavailable and not all(is_available(f, self.cfg.data_dir) for f in cls.data_files):
                missing = [f.rel for f in cls.data_files if not is_available(f, self.cfg.data_dir)]
                skipped[name] = f"data not available locally: {', '.join(missing)}"
                continue
            files = {f.rel: resolve(f, self.cfg.data_dir) for f in cls.data_files}
            prepared.append((b, files))
        return prepared, skipped

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        strategies = strat_registry.prepare(cfg.strategies, cfg.strategy_settings(self.show_progress))
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        spec = cfg.spec()
        path, model_info = materialise(spec)
        base_tok = load_tokenizer(path, spec)
        prepared, skipped = self.prepare_benchmarks()
        for name, why in skipped.items():
            self.log(f"[yellow]skipped {name}: {why}[/yellow]")
        if not self.compute_only:
            _write_json(self.out / "config.json", json.loads(cfg.model_dump_json()))
        store = RunStore(self.out / "store.sqlite")
        store.check_identity(
            {"model_fingerprint": model_info["fingerprint"], "dtype": dtype_name(dtype), "seed": cfg.seed, "bos": cfg.bos}
        )
        # items and rendered requests, computed once with the base tokenizer (shared by every variant)
        plan: list[tuple[Benchmark, dict[str, Any], list[Item], list[Keyed], bool]] = []
        for b, files in prepared:
            chat = b.chat_template_default if cfg.chat_template == "auto" else cfg.chat_template == "on"
            ctx = RequestContext(render=make_renderer(base_tok, chat), seed=cfg.seed, chat_template=chat,
                                 tokenize=anchored_tokenize(base_tok))
            items = b.select(b.load({rel: rf.path for rel, rf in files.items()}), cfg.limit, cfg.seed)
            reqs = [r for it in items for r in b.requests(it, ctx)]
            keys = [r.key for r in reqs]
            if len(set(keys)) != len(keys):
                raise DataError(f"benchmark {b.name} produced duplicate request keys (duplicate rows in the data?)")
            plan.append((b, files, items, reqs, chat))

        summary: dict[str, Any] = {"model": model_info, "variants": {}, "skipped": {}}
        previous = self.out / "summary.json"
        if previous.is_file():  # keep what earlier invocations on this run directory reported
            try:
                old = json.loads(previous.read_text())
                summary["variants"] = old.get("variants", {})
                summary["skipped"] = old.get("skipped", {})
            except ValueError:
                pass
        for name in [b.name for b, *_ in plan]:
            summary["skipped"].pop(name, None)
        summary["skipped"].update(skipped)
        if cfg.executor == "ray" and not self.compute_only:  # fill the store on Ray workers, then report below
            from .executors import run_ray

            run_ray(self, store, plan, strategies)
        for vname in cfg.strategies:
            strategy = strategies[vname]
            stored_request = store.variants().get(vname, {}).get("requested")
            if stored_request is not None and stored_request != strategy.requested():
                raise StoreError(
                    f"the run directory {self.out} holds results of variant {vname} built with other settings "
                    f"(stored {stored_request['config']}, now {strategy.requested()['config']}). Use a new --out "
                    "directory, or the original settings to resume"
                )
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
            vinfo = store.variants().get(vname, {})
            summary["variants"].setdefault(vname, {})
            for b, files, items, reqs, chat in plan:
                t_b = time.time()
                if pending[b.name]:
                    assert engine is not None
                    done = store.done(vname, b.name, reqs)
                    with self._progress(f"{vname} · {b.name}", len(reqs), len(done)) as advance:
                        engine.progress = advance
                        engine.run(reqs, functools.partial(self._commit, store, vname, b.name), done=done)
                if self.compute_only:
                    continue
                responses = store.responses(vname, b.name)
                units = b.units(items, responses)
                result = b.compute(units)
                doc = self._result_doc(b, result, vname, vinfo, model_info, files, chat, dtype_name(dtype), str(device),
                                       len(items), len(reqs), time.time() - t_b)
                _write_json(self.out / "results" / vname / f"{b.name}.json", doc)
                _write_jsonl(self.out / "units" / vname / f"{b.name}.jsonl", units)
                summary["variants"][vname][b.name] = {"metric": result.primary, "value": result.value, "n_units": result.n_units}
                self.log(f"  {vname:>10} {b.name:<20} {result.primary} = {_fmt(result.value)}  (n={result.n_units})")
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
                    n_items: int, n_requests: int, seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "benchmark": {
                "name": b.name, "title": b.title, "version": b.version, "kind": b.kind, "options": b.options,
                "primary_metric": b.primary_metric, "primary_description": b.primary_description,
                "higher_is_more_biased": b.higher_is_more_biased, "outcome": b.outcome,
            },
            "model": {k: model_info.get(k) for k in ("model_id", "source_kind", "revision", "fingerprint")},
            "variant": {
                "name": vname,
                "strategy": vinfo.get("strategy", vname),
                "config": vinfo.get("config", {}),
                "memory_footprint_bytes": vinfo.get("memory_footprint_bytes"),
                "architecture": vinfo.get("architecture"),
                "n_parameters": vinfo.get("n_parameters"),
                **{k: v for k, v in vinfo.items() if k in ("measured", "notes")},
            },
            "inference": {
                "dtype": dtype, "device": device, "chat_template": chat, "seed": cfg.seed,
                "engine": vinfo.get("engine", {}),
            },
            "data": [{"file": rel, "path": str(rf.path), "sha256": rf.sha256, "origin": rf.origin, "checksum_verified": rf.verified}
                     for rel, rf in files.items()],
            "limit": cfg.limit,
            "n_items": n_items,
            "n_requests": n_requests,
            "n": result.n_units,
            "primary": {"metric": result.primary, "value": result.value},
            "metrics": result.metrics,
            "per_group": result.per_group,
            "rates": result.rates,
            "notes": result.notes,
            "library_versions": library_versions(),
            "seconds": round(seconds, 3),
        }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
