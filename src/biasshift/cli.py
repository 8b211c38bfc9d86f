"""Command-line interface: ``biasshift run``, ``biasshift list``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import BiasshiftError, ConfigError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure how inference acceleration changes the demographic bias of an LLM.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()


def friendly(fn):
    """Turn BiasshiftError into a one-paragraph message and exit code 2 (no stack trace)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BiasshiftError as exc:
            console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; finished batches are stored, rerun the same command to resume[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


def parse_options(values: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for v in values:
        if "=" not in v or "." not in v.split("=", 1)[0]:
            raise ConfigError(f"--option must look like BENCHMARK.KEY=VALUE, not {v!r}")
        lhs, value = v.split("=", 1)
        bench, key = lhs.split(".", 1)
        out.setdefault(bench.strip(), {})[key.strip()] = value.strip()
    return out


@app.command()
@friendly
def run(
    model: Annotated[str, typer.Option(help="Hugging Face hub id, local model directory, or .gguf file")],
    out: Annotated[Path, typer.Option(help="run directory (created; rerun the same command to resume)")],
    benchmarks: Annotated[str, typer.Option(help="comma-separated benchmark names, or 'all'")] = "all",
    strategies: Annotated[str, typer.Option(help="comma-separated strategies; 'base' is always included")] = "base",
    limit: Annotated[Optional[int], typer.Option(help="run only N units per benchmark (seeded, same for every variant)")] = None,
    batch_size: Annotated[str, typer.Option(help="'auto' or a number of sequences per batch")] = "auto",
    max_batch_tokens: Annotated[Optional[int], typer.Option(help="also cap each batch at this many padded tokens (rows x longest), so long prompts get smaller batches")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model forward (CUDA only; an error on CPU)")] = False,
    executor: Annotated[str, typer.Option(help="local, or ray: one Ray task per variant, all writing to the same run store (pip install 'biasshift[ray]')")] = "local",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")] = "auto",
    chat_template: Annotated[str, typer.Option(help="auto (each benchmark's reference setting), on, off")] = "auto",
    bos: Annotated[str, typer.Option(help="BOS token: auto (as the tokenizer does), always, never")] = "auto",
    data_dir: Annotated[Optional[Path], typer.Option(help="local benchmark data directory (docs/data.md); also BIASSHIFT_DATA_DIR", envvar="BIASSHIFT_DATA_DIR")] = None,
    seed: Annotated[int, typer.Option(help="seed for subsets and sampling")] = 0,
    revision: Annotated[Optional[str], typer.Option(help="hub revision (commit, tag or branch)")] = None,
    option: Annotated[list[str], typer.Option("--option", help="benchmark option BENCHMARK.KEY=VALUE (repeatable)")] = [],
    skip_unavailable: Annotated[bool, typer.Option(help="skip (and report) benchmarks whose data is not available locally instead of downloading")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="allow model code from the hub (off by default)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress (a bar on a terminal, periodic lines in logs)")] = True,
    calib_data: Annotated[str, typer.Option(help="Wanda calibration text: 'c4' (C4 shard from the hub) or a local .txt / .jsonl / .json.gz file")] = "c4",
    calib_samples: Annotated[int, typer.Option(help="Wanda calibration windows")] = 128,
    calib_seqlen: Annotated[int, typer.Option(help="Wanda calibration window length in tokens (capped at the model's max_position_embeddings)")] = 2048,
    quantize_prompt_cache: Annotated[bool, typer.Option(help="KV strategies: score choice requests against the quantized prompt cache")] = False,
    strategy_checkpoint: Annotated[list[str], typer.Option("--strategy-checkpoint", help="pre-quantized checkpoint for awq/gptq: NAME=PATH_OR_HUB_ID, or NAME=HUB_ID@REVISION (repeatable)")] = [],
) -> None:
    """Build every variant, run every benchmark on it, store item-level answers and write results."""
    from . import benchmarks as bench_registry
    from . import strategies as strat_registry
    from .engine.hf import batch_size_arg
    from .runner import RunConfig, Runner

    if chat_template not in ("auto", "on", "off"):
        raise ConfigError("--chat-template must be auto, on or off")
    if bos not in ("auto", "always", "never"):
        raise ConfigError("--bos must be auto, always or never")
    if executor not in ("local", "ray"):
        raise ConfigError("--executor must be local or ray")
    if executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--executor ray needs Ray, an optional dependency: pip install 'biasshift[ray]' (or use --executor local)")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ConfigError("--max-batch-tokens must be >= 1")
    if compile:
        from .models import resolve_device

        if resolve_device(device).type != "cuda":
            raise ConfigError("--compile needs a CUDA device (torch.compile of the model forward is GPU-only here)")
    cfg = RunConfig(
        model=model,
        revision=revision,
        strategies=strat_registry.parse_list(strategies),
        benchmarks=bench_registry.parse_list(benchmarks),
        limit=limit,
        batch_size=batch_size_arg(batch_size),
        max_batch_tokens=max_batch_tokens,
        compile=compile,
        executor=executor,  # type: ignore[arg-type]
        device=device,
        dtype=dtype,
        chat_template=chat_template,  # type: ignore[arg-type]
        bos=bos,  # type: ignore[arg-type]
        out=out,
        data_dir=data_dir,
        seed=seed,
        trust_remote_code=trust_remote_code,
        options=parse_options(option),
        skip_unavailable=skip_unavailable,
        calib_data=calib_data,
        calib_samples=calib_samples,
        calib_seqlen=calib_seqlen,
        quantize_prompt_cache=quantize_prompt_cache,
        strategy_checkpoints=strat_registry.parse_checkpoints(strategy_checkpoint),
    )
    summary = Runner(cfg, console=console, progress=progress).run()
    table = Table(title=f"biasshift results: {summary['model']['model_id']}")
    table.add_column("benchmark")
    table.add_column("metric")
    for v in summary["variants"]:
        table.add_column(v, justify="right")
    names = list(dict.fromkeys(b for v in summary["variants"].values() for b in v))
    for b in names:
        first = next(v[b] for v in summary["variants"].values() if b in v)
        row = [b, first["metric"]]
        for v in summary["variants"].values():
            val = v.get(b, {}).get("value")
            row.append("n/a" if val is None else f"{val:.4f}")
        table.add_row(*row)
    out_console.print(table)
    for name, why in summary["skipped"].items():
        out_console.print(f"[yellow]skipped {name}: {why}[/yellow]")
    out_console.print(f"results in {out} ({summary['seconds']:.1f} s)")


@app.command("list")
@friendly
def list_cmd() -> None:
    """Show the available benchmarks and strategies."""
    from . import benchmarks as bench_registry
    from . import strategies as strat_registry

    t = Table(title="benchmarks")
    t.add_column("name", no_wrap=True, style="bold")
    for c in ("title", "kind", "primary metric", "options (defaults)", "data files"):
        t.add_column(c)
    for name in bench_registry.names():
        cls = bench_registry.get(name)
        t.add_row(
            name,
            cls.title,
            cls.kind,
            f"{cls.primary_metric}: {cls.primary_description}",
            ", ".join(f"{k}={v}" for k, v in cls.default_options.items()) or "-",
            "\n".join(f.rel for f in cls.data_files),
        )
    out_console.print(t)
    s = Table(title="strategies")
    s.add_column("name", no_wrap=True, style="bold")
    s.add_column("description")
    for name, desc in strat_registry.describe().items():
        s.add_row(name, desc)
    out_console.print(s)


@app.command("report")
@friendly
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories written by `biasshift run` (one row per model)")],
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: RUN_DIR/report for one run, ./biasshift-report for several)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="comma-separated: terminal, html, md, csv, json (or all)")] = "terminal,html,md,csv,json",
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the CIs")] = 2000,
    n_perm: Annotated[int, typer.Option(help="random relabellings for permutation tests (exact enumeration for few units)")] = 5000,
    seed: Annotated[int, typer.Option(help="seed for the bootstrap and permutations")] = 0,
    alpha: Annotated[float, typer.Option(help="significance level after Holm's correction (the '*' marker)")] = 0.05,
    metric: Annotated[list[str], typer.Option("--metric", help="also compare BENCH.METRIC besides the primary metrics (repeatable)")] = [],
    samples: Annotated[int, typer.Option(help="sample generations per generation benchmark in the HTML")] = 3,
) -> None:
    """Compare every strategy with base: changes, paired bootstrap CIs, paired tests with Holm; write reports."""
    from .report import build_report, parse_formats, write_report

    formats = parse_formats(fmt)
    report = build_report(run_dirs, metrics=metric, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha, samples=samples,
                          log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True))
    if out is None:
        out = run_dirs[0] / "report" if len(run_dirs) == 1 else Path("biasshift-report")
    written = write_report(report, out, formats, console=out_console)
    for p in written:
        out_console.print(f"wrote {p}", highlight=False, markup=False, soft_wrap=True)


@app.command("gate")
@friendly
def gate_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories written by `biasshift run`")],
    max_increase: Annotated[str, typer.Option(help="largest tolerated bias increase: '10%' (relative) or '0.02' (absolute, metric units)")] = "10%",
    metric: Annotated[list[str], typer.Option("--metric", help="gate only BENCH or BENCH.METRIC (repeatable; default: every primary metric)")] = [],
    alpha: Annotated[float, typer.Option(help="significance level after Holm's correction")] = 0.05,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the CIs")] = 2000,
    n_perm: Annotated[int, typer.Option(help="random relabellings for permutation tests")] = 5000,
    seed: Annotated[int, typer.Option(help="seed for the bootstrap and permutations")] = 0,
    fail_on_missing: Annotated[bool, typer.Option(help="also fail when a gated comparison has no value or no p-value")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the gate result as JSON to this file")] = None,
) -> None:
    """Exit 1 if any strategy makes a benchmark significantly (Holm) more biased by more than --max-increase."""
    import json as _json

    from .report import gate

    result = gate(run_dirs, max_increase=max_increase, metrics=metric, alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed,
                  fail_on_missing=fail_on_missing)
    for w in result.warnings:
        out_console.print(f"warning: {w}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    for r in result.reasons:
        out_console.print(f"FAIL {r}", style="red", highlight=False, markup=False, soft_wrap=True)
    out_console.print(result.summary(), style="green" if result.ok else "bold red", highlight=False, markup=False, soft_wrap=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(_json.dumps(result.to_dict(), indent=1, default=str))
    if not result.ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
