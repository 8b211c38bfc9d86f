"""Command-line interface: ``biasshift run``, ``biasshift list``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import EXIT_ERROR, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, BiasshiftError, ConfigError, os_error_message

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure how inference acceleration changes the demographic bias of an LLM.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()


def friendly(fn):
    """Errors become one line and an exit code of their own (docs/reliability.md), never a stack trace:

    2 for an error the user can act on (BiasshiftError, or an OS error such as a full disk), 3 for an
    unexpected internal error (BIASSHIFT_TRACEBACK=1 re-raises it with its traceback), 130 for Ctrl-C.
    Exit code 1 is left to the gate (a significant bias increase), so a crash never reads as a failed check.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import os

        import click

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except BiasshiftError as exc:
            console.print(f"[bold red]error:[/bold red] {escape(_one_line(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; finished batches are stored, rerun the same command to resume[/yellow]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as exc:
            msg = os_error_message(exc, "reading or writing a file", exc.filename)
            console.print(f"[bold red]error:[/bold red] {escape(msg)}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except MemoryError:
            console.print("[bold red]error:[/bold red] out of memory: use a smaller --batch-size or --max-batch-tokens, or "
                          "--limit; rerun the same command to resume", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except Exception as exc:
            if os.environ.get("BIASSHIFT_TRACEBACK"):
                raise
            console.print(f"[bold red]internal error:[/bold red] {escape(type(exc).__name__)}: {escape(_one_line(exc))} "
                          "(a bug in biasshift; finished batches are stored. Rerun with BIASSHIFT_TRACEBACK=1 for the "
                          "traceback and report it)", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:4000]


def _files_line(rels: list[str], show: int = 4) -> str:
    """A benchmark's data files for `biasshift list`: all of them when few, else the first and a count."""
    if len(rels) <= show:
        return ", ".join(rels)
    return ", ".join(rels[:2]) + f", ... ({len(rels)} files, see docs/data.md)"


def parse_limits(values: list[str]) -> dict[str, int]:
    """``--limit-for BENCHMARK=N`` (repeatable) -> {benchmark: N}."""
    out: dict[str, int] = {}
    for v in values:
        name, sep, n = v.partition("=")
        try:
            k = int(n)
        except ValueError:
            k = 0
        if not sep or not name.strip() or k < 1:
            raise ConfigError(f"--limit-for must look like BENCHMARK=N with N >= 1 (e.g. crows_pairs=300), not {v!r}")
        out[name.strip()] = k
    return out


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
    limit_for: Annotated[list[str], typer.Option("--limit-for", help="per-benchmark limit BENCHMARK=N, overriding --limit for that benchmark (repeatable)")] = [],
    batch_size: Annotated[str, typer.Option(help="'auto' or a number of sequences per batch")] = "auto",
    max_batch_tokens: Annotated[Optional[int], typer.Option(help="also cap each batch at this many padded tokens (rows x longest), so long prompts get smaller batches")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model forward (CUDA only; an error on CPU)")] = False,
    executor: Annotated[str, typer.Option(help="local, or ray: one Ray task per variant, all writing to the same run store (pip install 'biasshift[ray]')")] = "local",
    engine: Annotated[str, typer.Option(help="hf (transformers in this process), vllm (a vLLM server in its own environment, docs/engine.md), or auto (per request kind, the faster one)")] = "hf",
    engine_url: Annotated[Optional[str], typer.Option(help="an already running vLLM server (http://host:port) instead of starting one")] = None,
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
    share_base: Annotated[bool, typer.Option(help="take answers a variant provably shares with base (kv4/kv8 on scoring benchmarks without --quantize-prompt-cache) from base instead of recomputing them")] = True,
) -> None:
    """Build every variant, run every benchmark on it, store item-level answers and write results."""
    from . import benchmarks as bench_registry
    from . import strategies as strat_registry
    from .engine.hf import batch_size_arg
    from .runner import RunConfig, Runner

    cfg = RunConfig.build(
        model=model,
        revision=revision,
        strategies=strat_registry.parse_list(strategies),
        benchmarks=bench_registry.parse_list(benchmarks),
        limit=limit,
        limits=parse_limits(limit_for),
        batch_size=batch_size_arg(batch_size),
        max_batch_tokens=max_batch_tokens,
        compile=compile,
        executor=executor,
        engine=engine,
        engine_url=engine_url,
        device=device,
        dtype=dtype,
        chat_template=chat_template,
        bos=bos,
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
        share_base_answers=share_base,
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

    # one block per benchmark rather than a wide table: readable at 80 columns (long text wraps)
    out_console.print("[bold]benchmarks[/bold]")
    for name in bench_registry.names():
        cls = bench_registry.get(name)
        tag = "quality anchor, not a bias metric" if cls.is_quality_metric else cls.kind
        out_console.print(f"\n  [bold]{escape(name)}[/bold]  {escape(cls.title)} ({tag})", highlight=False)
        lines = [
            ("metric", f"{cls.primary_metric}: {cls.primary_description}"),
            ("options", ", ".join(f"{k}={v}" for k, v in cls.default_options.items()) or "-"),
            ("data", _files_line([f.rel for f in cls.data_files])),
        ]
        if cls.not_in_all:
            lines.append(("not in all", cls.not_in_all))
        for label, text in lines:
            g = Table.grid(padding=(0, 1))
            g.add_column(width=11, no_wrap=True, justify="right", style="dim")
            g.add_column(overflow="fold")
            g.add_row(label, escape(text))
            out_console.print(g, highlight=False)
    s = Table(title="strategies", title_justify="left", show_lines=False)
    s.add_column("name", no_wrap=True, style="bold")
    s.add_column("description", overflow="fold")
    for name, desc in strat_registry.describe().items():
        s.add_row(escape(name), escape(desc))
    out_console.print()
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

    from .report.integrity import unique_run_dirs

    unique_run_dirs(run_dirs)  # the same run twice would double its Holm family
    formats = parse_formats(fmt)
    report = build_report(run_dirs, metrics=metric, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha, samples=samples,
                          log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True))
    if out is None:
        out = run_dirs[0] / "report" if len(run_dirs) == 1 else Path("biasshift-report")
    try:
        written = write_report(report, out, formats, console=out_console)
    except OSError as exc:
        from .errors import DiskError

        raise DiskError(exc, "writing the report", exc.filename or out) from None
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
    """Exit 1 if any strategy makes a benchmark significantly (Holm) more biased by more than --max-increase.

    Exit 0 when the gate passes; errors exit 2 (3 for an internal error), never 1 (docs/reliability.md).
    """
    import json as _json

    from .report import gate
    from .report.integrity import unique_run_dirs

    unique_run_dirs(run_dirs)
    result = gate(run_dirs, max_increase=max_increase, metrics=metric, alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed,
                  fail_on_missing=fail_on_missing)
    for w in result.warnings:
        out_console.print(f"warning: {w}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    for r in result.reasons:
        out_console.print(f"FAIL {r}", style="red", highlight=False, markup=False, soft_wrap=True)
    out_console.print(result.summary(), style="green" if result.ok else "bold red", highlight=False, markup=False, soft_wrap=True)
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(_json.dumps(result.to_dict(), indent=1, default=str))
        except OSError as exc:
            from .errors import DiskError

            raise DiskError(exc, "writing the gate result", json_out) from None
    if not result.ok:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("diff")
@friendly
def diff_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `biasshift run`")],
    variant: Annotated[Optional[str], typer.Option(help="the variant to compare with base (default: every variant)")] = None,
    benchmark: Annotated[Optional[str], typer.Option(help="the benchmark (default: every benchmark run on base and the variant)")] = None,
    top: Annotated[int, typer.Option(help="items to show per variant x benchmark")] = 10,
) -> None:
    """What changed item by item: the units whose outcome flipped or moved most from base to a variant."""
    from rich.text import Text

    from .report.compare import BASE, load_run
    from .report.diff import item_diff
    from .report.render import diff_title

    run = load_run(run_dir)
    if variant is not None and (variant == BASE or variant not in run.variants):
        raise ConfigError(f"--variant {variant}: {run_dir} has no such variant to compare with base "
                          f"(variants: {', '.join(run.compared_variants) or 'none'})")
    variants = [variant] if variant else run.compared_variants
    if not variants:
        raise ConfigError(f"{run_dir} holds no variant besides base: nothing to diff")
    for v in variants:
        benches = [benchmark] if benchmark else [b for b in run.benchmarks
                                                 if b in run.variants.get(v, {}) and b in run.variants.get(BASE, {})]
        for b in benches:
            d = item_diff(run, v, b, top)
            out_console.print(Text(diff_title(d), style="bold"))
            if d.note:
                out_console.print(Text(d.note, style="yellow"))
            for i, r in enumerate(d.rows, 1):
                head = f"#{i} unit {r.unit}" + (f" / {r.item}" if r.item else "") + (f" [{r.group}]" if r.group else "")
                size = "n/a" if r.size is None else f"{r.size:.4g}"
                out_console.print(Text(f"{head}  {'FLIPPED' if r.flipped else 'moved'}  size {size}",
                                       style="red" if r.flipped else ""))
                for label, val in (("item", r.text), ("base", r.base), ("variant", r.variant), ("change", r.change)):
                    if val:
                        out_console.print(Text(f"  {label + ':':<9}{val}".replace("\n", "\n           ")))
            out_console.print(Text(""))


@app.command("sweep")
@friendly
def sweep_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories whose variants prune at several rates")],
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: RUN_DIR/sweep for one run, ./biasshift-sweep for several)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="comma-separated: terminal, md, csv, json, html (or all)")] = "terminal,md,csv,json,html",
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the CIs")] = 2000,
    n_perm: Annotated[int, typer.Option(help="random relabellings for permutation tests")] = 5000,
    seed: Annotated[int, typer.Option(help="seed for the bootstrap and permutations")] = 0,
    alpha: Annotated[float, typer.Option(help="significance level after Holm's correction")] = 0.05,
) -> None:
    """Bias (overall and per group) and perplexity against the pruning rate, with paired CIs and Holm (docs/report.md)."""
    from .report import build_report
    from .report.integrity import unique_run_dirs
    from .report.sweep import build_sweep, parse_sweep_formats, write_sweep

    unique_run_dirs(run_dirs)
    formats = parse_sweep_formats(fmt)
    report = build_report(run_dirs, n_boot=n_boot, n_perm=n_perm, seed=seed, alpha=alpha, samples=0, diff_top=0,
                          log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True))
    sweep = build_sweep(report)
    if sweep is None:
        raise ConfigError(f"no compression-rate sweep in {', '.join(str(r) for r in run_dirs)}: it needs >= 2 unstructured "
                          f"rates of one pruning method (e.g. --strategies 'base,magnitude@0.1:0.5:0.2')")
    if out is None:
        out = run_dirs[0] / "sweep" if len(run_dirs) == 1 else Path("biasshift-sweep")
    try:
        written = write_sweep(sweep, out, formats, console=out_console)
    except OSError as exc:
        from .errors import DiskError

        raise DiskError(exc, "writing the sweep report", exc.filename or out) from None
    for p in written:
        out_console.print(f"wrote {p}", highlight=False, markup=False, soft_wrap=True)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
