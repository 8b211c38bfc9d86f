"""Distributed execution of a run: ``biasshift run --executor ray``.

Granularity: **one Ray task per variant** (strategy). A task builds its variant once and runs every
benchmark of the run on it, writing each finished engine batch to the run's one SQLite store, exactly
as the local executor does. A task per (variant, benchmark) cell was rejected: building a variant is
the expensive part (Wanda calibration, bitsandbytes quantization, loading 16 GB of weights), and every
cell would repeat it; one GPU per variant is also the natural unit on a multi-GPU node.

The driver (the ``biasshift run`` process) resolves the model (so a GGUF file is dequantised once,
before the workers start), writes ``config.json``, checks the run identity, dispatches one task per
variant with pending requests, waits for all of them, and then runs the ordinary local loop, which
finds every request stored and computes ``results/``, ``units/`` and ``summary.json`` from the store.
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

import os
import time
from pathlib import Path
from typing import Any

from .errors import BiasshiftError, ConfigError

_ENV_PREFIXES = ("BIASSHIFT_", "HF_", "TRANSFORMERS_", "HUGGINGFACE_")


def _portable(cfg: Any) -> Any:
    """The config as a worker needs it: absolute paths, the local executor."""
    update: dict[str, Any] = {"executor": "local", "out": Path(cfg.out).resolve()}
    if cfg.data_dir is not None:
        update["data_dir"] = Path(cfg.data_dir).resolve()
    src = Path(cfg.model).expanduser()
    if src.exists():
        update["model"] = str(src.resolve())
    return cfg.model_copy(update=update)


def _variant_task(cfg_json: str, vname: str, cwd: str, gpu: bool, threads: int,
                  benchmarks: list[str] | None = None) -> dict[str, Any]:
    """Ray task body: fill the store with every answer of variant ``vname`` (no results written) for
    ``benchmarks`` (default: all of the run's; the driver leaves out those shared with base)."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    import torch

    torch.set_num_threads(max(1, threads))  # the task's CPU share (float sums depend on the thread count)
    from .runner import RunConfig, Runner

    cfg = RunConfig.model_validate_json(cfg_json)
    update: dict[str, Any] = {"strategies": [vname], "executor": "local"}
    if benchmarks is not None:
        update["benchmarks"] = benchmarks
        update["options"] = {k: v for k, v in cfg.options.items() if k in benchmarks}
        update["limits"] = {k: v for k, v in cfg.limits.items() if k in benchmarks}
    if gpu and cfg.device.startswith("cuda:"):
        update["device"] = "cuda"  # Ray exposes the task's GPU as the only visible device
    cfg = cfg.model_copy(update=update)
    t0 = time.time()
    Runner(cfg, console=None, progress=False, compute_only=True).run()
    import socket

    return {"variant": vname, "seconds": round(time.time() - t0, 2), "host": socket.gethostname(), "pid": os.getpid()}


def pending_variants(store: Any, plan: list, strategies: list[str],
                     shared: dict[str, set[str]] | None = None) -> list[str]:
    """Variants with requests still to compute; benchmarks a variant shares with base do not count."""
    shared = shared or {}
    return [
        v for v in strategies
        if any(len(reqs) - len(store.done(v, b.name, reqs))
               for b, _files, _items, reqs, _chat in plan if b.name not in shared.get(v, set()))
    ]


def run_ray(runner: Any, store: Any, plan: list, strategies: dict[str, Any],
            shared: dict[str, set[str]] | None = None) -> list[dict[str, Any]]:
    """Run every variant with pending requests as one Ray task; return the tasks' reports."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, an optional dependency: pip install 'biasshift[ray]' (or use --executor local)"
        ) from None
    cfg = runner.cfg
    shared = shared or {}
    todo = pending_variants(store, plan, list(cfg.strategies), shared)
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
        runner.log(f"ray: {len(todo)} variant task(s) ({', '.join(todo)}), {'1 GPU' if gpu else 'CPU only'} each")
        names = [b.name for b, *_ in plan]
        refs = {task.remote(cfg_json, v, os.getcwd(), gpu, int(cpus),
                            [n for n in names if n not in shared.get(v, set())]): v for v in todo}
        reports: list[dict[str, Any]] = []
        errors: list[tuple[str, BaseException]] = []
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                v = refs[ref]
                try:
                    rep = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - reported below with the variant's name
                    errors.append((v, getattr(exc, "cause", None) or exc))
                    runner.log(f"[red]ray: variant {v} failed[/red]")
                    continue
                reports.append(rep)
                runner.log(f"ray: variant {v} stored in {rep['seconds']:.1f} s (host {rep['host']})")
        if errors:
            v, exc = errors[0]
            if isinstance(exc, BiasshiftError):
                raise exc
            raise BiasshiftError(f"variant {v} failed on a Ray worker: {type(exc).__name__}: {exc}")
        return reports
    finally:
        if started:
            ray.shutdown()
