"""Executors: fill the run store with every variant's answers, locally or on Ray.

``compute_variant`` is the one compute loop (local runs and Ray workers both call it): share what the
variant takes from base, build the variant through the engine registry, run each benchmark's pending
requests and commit every finished batch. Executors know the plan, the store and the engine contract,
never the runner or an engine class.

``--executor ray``:

Granularity: **one Ray task per variant** (strategy). A task builds its variant once and runs every
benchmark of the run on it, writing each finished engine batch to the run's one SQLite store, exactly
as the local executor does. A task per (variant, benchmark) cell was rejected: building a variant is
the expensive part (Wanda calibration, bitsandbytes quantization, loading 16 GB of weights), and every
cell would repeat it; one GPU per variant is also the natural unit on a multi-GPU node.

The driver (the ``biasshift run`` process) resolves the model (so a GGUF file is dequantised once,
before the workers start), writes ``config.json``, checks the run identity, dispatches one task per
variant with pending requests (``RunPlan.variants_with_work``), waits for all of them, and then writes
``results/``, ``units/`` and ``summary.json`` from the store as a local run does.
The results are therefore those of the local executor (tested for equality on a local CPU cluster).

Concurrency: every worker opens the store itself; SQLite in WAL mode with a busy timeout serialises the
writers (``RunStore.put_many`` takes the write lock with ``BEGIN IMMEDIATE``), readers never block.
Resuming works as locally: a rerun dispatches only variants that still lack answers.

Resources: ``num_gpus=1`` per task when the cluster has GPUs (and ``--device`` is not ``cpu``), else
``num_gpus=0``; ``num_cpus`` is ``BIASSHIFT_RAY_CPUS`` (default 1), which is also the task's torch
thread count (on CPU, float sums are bit-identical to a local run only with the same thread count;
otherwise they agree to float tolerance). Ray pins each task to its GPU
through ``CUDA_VISIBLE_DEVICES``, so ``--device cuda:N`` becomes ``cuda`` on the worker. The cluster is
``RAY_ADDRESS`` when set (``ray start --head`` on the node), else a local one started for the run. Paths
(model, data, output) are made absolute and workers start in the driver's working directory, so they
must be visible to every node (a shared filesystem) on a multi-node cluster.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from .config import RunConfig
from .engine import make_engine
from .errors import BiasshiftError, ConfigError, StoreError
from .plan import BASE, PreparedRun, prepare_run
from .store import RunStore

_ENV_PREFIXES = ("BIASSHIFT_", "HF_", "TRANSFORMERS_", "HUGGINGFACE_")
_DEBUG_DELAY = float(os.environ.get("BIASSHIFT_DEBUG_BATCH_DELAY", "0") or 0)

#: (label, total, already done) -> a context manager yielding ``advance(n)`` or None
ProgressFactory = Callable[[str, int, int], AbstractContextManager[Any]]


def _no_progress(label: str, total: int, done: int) -> AbstractContextManager[Any]:
    return nullcontext(None)


def kind_of(reqs: list[Any]) -> str:
    kinds = {r.request.kind for r in reqs}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


def _commit(store: RunStore, variant: str, benchmark: str, results: list) -> None:
    store.put_many(variant, benchmark, results)
    if _DEBUG_DELAY:  # testing aid: slow a run down so a test can kill it mid-way
        time.sleep(_DEBUG_DELAY)


def compute_variant(run: PreparedRun, store: RunStore, vname: str, log: Callable[[str], None] = lambda m: None,
                    progress: ProgressFactory = _no_progress, log_dir: str | None = None) -> None:
    """Store every answer of variant ``vname``: copy what it shares with base (base must be done first),
    build it for the run's engine only if requests remain, and commit each finished batch."""
    cfg, plan = run.cfg, run.plan
    strategy = plan.strategies[vname]
    for bp in plan.benchmarks:
        if bp.name in plan.shared.get(vname, set()):
            n = store.copy_answers(BASE, vname, bp.name, bp.requests)
            store.mark_shared(vname, bp.name, BASE, len(bp.requests))
            if n:
                log(f"  {vname:>10} {bp.name:<20} {n} answers shared with base (not recomputed: "
                    f"{vname} cannot change scoring requests)")
    pending = plan.pending(store, vname)
    if not any(pending.values()):
        if vname not in store.variants():  # never built: every answer shared with base
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
        return
    stored_engine = store.variants().get(vname, {}).get("engine_requested")
    if stored_engine is not None and stored_engine != cfg.engine:
        raise StoreError(f"variant {vname} of this run directory was computed with --engine {stored_engine}; one "
                         f"variant is computed by one engine. Resume with --engine {stored_engine}, or use a new --out")
    log(f"building variant [bold]{vname}[/bold] ...")
    tb = time.time()
    engine = make_engine(cfg.engine, strategy, run.spec, cfg.engine_settings(log_dir))
    try:
        build_seconds = round(time.time() - tb, 2)
        store.set_variant(vname, {**engine.variant_info, "build_seconds": build_seconds, "engine_requested": cfg.engine})
        for bp in plan.computed(vname):
            if not pending[bp.name]:
                continue
            done = store.done(vname, bp.name, bp.requests)
            with progress(f"{vname} · {bp.name}", len(bp.requests), len(done)) as advance:
                engine.progress = advance
                before = (engine.stats.forward_tokens, engine.stats.generated_tokens)
                te = time.perf_counter()
                engine.run(bp.requests, lambda results, b=bp.name: _commit(store, vname, b, results), done=done)
                store.add_throughput(vname, bp.name, kind_of(bp.requests), len(bp.requests) - len(done),
                                     time.perf_counter() - te, engine.stats.forward_tokens - before[0],
                                     engine.stats.generated_tokens - before[1])
        # an engine that opens sub-engines lazily (auto) knows the variant's measurements only now
        store.set_variant(vname, {**engine.variant_info, "build_seconds": build_seconds, "engine_requested": cfg.engine})
    finally:
        engine.close()
        del engine
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


# ---------------------------------------------------------------------------------------------- Ray
def _portable(cfg: RunConfig) -> RunConfig:
    """The config as a worker needs it: absolute paths, the local executor."""
    update: dict[str, Any] = {"executor": "local", "out": Path(cfg.out).resolve()}
    if cfg.data_dir is not None:
        update["data_dir"] = Path(cfg.data_dir).resolve()
    src = Path(cfg.model).expanduser()
    if src.exists():
        update["model"] = str(src.resolve())
    return cfg.model_copy(update=update)


def _variant_task(cfg_json: str, vname: str, cwd: str, gpu: bool, threads: int) -> dict[str, Any]:
    """Ray task body: fill the store with every answer variant ``vname`` computes itself (the plan leaves
    out what it shares with base); no result is written."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    import torch

    torch.set_num_threads(max(1, threads))  # the task's CPU share (float sums depend on the thread count)
    cfg = RunConfig.model_validate_json(cfg_json)
    update: dict[str, Any] = {"executor": "local"}
    if gpu and cfg.device.startswith("cuda:"):
        update["device"] = "cuda"  # Ray exposes the task's GPU as the only visible device
    cfg = cfg.model_copy(update=update)
    t0 = time.time()
    run = prepare_run(cfg, log=lambda m: None)
    run.plan.strategies = {vname: run.plan.strategies[vname]}
    with RunStore(Path(cfg.out) / "store.sqlite") as store:
        compute_variant(run, store, vname, log_dir=str(cfg.out))
    import socket

    return {"variant": vname, "seconds": round(time.time() - t0, 2), "host": socket.gethostname(), "pid": os.getpid()}


def run_ray(run: PreparedRun, store: RunStore, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run every variant with pending requests as one Ray task; return the tasks' reports. Answers shared
    with base are copied by the driver afterwards (``run_local`` finds nothing else to compute)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, an optional dependency: pip install 'biasshift[ray]' (or use --executor local)"
        ) from None
    cfg, plan = run.cfg, run.plan
    todo = plan.variants_with_work(store)
    if not todo:
        return []
    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, logging_level="WARNING")
        started = True
    try:
        gpu = cfg.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
        cpus = float(os.environ.get("BIASSHIFT_RAY_CPUS", "1") or 1)
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        task = ray.remote(num_gpus=1 if gpu else 0, num_cpus=cpus, max_retries=0)(_variant_task)
        if env:
            task = task.options(runtime_env={"env_vars": env})
        cfg_json = _portable(cfg).model_dump_json()
        log(f"ray: {len(todo)} variant task(s) ({', '.join(todo)}), {'1 GPU' if gpu else 'CPU only'} each")
        refs = {task.remote(cfg_json, v, os.getcwd(), gpu, int(cpus)): v for v in todo}
        reports: list[dict[str, Any]] = []
        errors: list[tuple[str, BaseException]] = []
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                v = refs[ref]
                try:
                    rep = ray.get(ref)
                except Exception as exc:
                    errors.append((v, getattr(exc, "cause", None) or exc))
                    log(f"[red]ray: variant {v} failed[/red]")
                    continue
                reports.append(rep)
                log(f"ray: variant {v} stored in {rep['seconds']:.1f} s (host {rep['host']})")
        if errors:
            v, exc = errors[0]
            if isinstance(exc, BiasshiftError):
                raise exc
            raise BiasshiftError(f"variant {v} failed on a Ray worker: {type(exc).__name__}: {exc}")
        return reports
    finally:
        if started:
            ray.shutdown()
