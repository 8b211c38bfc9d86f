"""The run plan: what a run will compute, fixed before anything is built or written.

``build_plan`` resolves every benchmark's files (local, else downloaded), loads and selects its items and
renders its requests once with the base tokenizer; the variants share them. ``RunPlan.pending`` is the one
function that says which requests a variant still lacks (the local executor, the Ray driver and the result
writer all ask it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import benchmarks as bench_registry
from .benchmarks.base import Benchmark, Item, RequestContext
from .config import RunConfig
from .data import ResolvedFile, is_available, resolve
from .engine.hf import anchored_tokenize
from .engine.requests import Keyed, Prompt
from .errors import ConfigError, DataError
from . import rundir

BASE = "base"


@dataclass(frozen=True)
class BenchmarkPlan:
    """One benchmark of the run: its files, its selected items and their rendered requests."""

    benchmark: Benchmark
    files: dict[str, ResolvedFile]
    items: list[Item]
    requests: list[Keyed]
    chat: bool

    @property
    def name(self) -> str:
        return self.benchmark.name

    @property
    def scoring_only(self) -> bool:
        """Every request scores text (no generation): answers a KV-cache setting cannot change."""
        return bool(self.requests) and all(r.request.kind != "generate" for r in self.requests)


@dataclass
class RunPlan:
    benchmarks: list[BenchmarkPlan]
    #: variant name -> Strategy (validated, nothing built yet)
    strategies: dict[str, Any]
    #: benchmark name -> reason it is not part of the run
    skipped: dict[str, str] = field(default_factory=dict)
    #: variant -> benchmarks whose answers it takes from base (see ``shared_with_base``)
    shared: dict[str, set[str]] = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        """Base first: other variants may take its answers."""
        return sorted(self.strategies, key=lambda v: v != BASE)

    def computed(self, variant: str) -> list[BenchmarkPlan]:
        """The benchmarks ``variant`` computes itself (not shared with base)."""
        return [bp for bp in self.benchmarks if bp.name not in self.shared.get(variant, set())]

    def pending(self, store: Any, variant: str) -> dict[str, int]:
        """Per benchmark ``variant`` computes itself: the number of requests not yet in the store."""
        return {bp.name: len(bp.requests) - len(store.done(variant, bp.name, bp.requests)) for bp in self.computed(variant)}

    def variants_with_work(self, store: Any) -> list[str]:
        return [v for v in self.variants if any(self.pending(store, v).values())]


def make_renderer(tokenizer: Any, chat: bool) -> Callable[[Prompt], str]:
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("--chat-template on, but this tokenizer has no chat template")

    def render(p: Prompt) -> str:
        if chat and p.messages:
            msgs = [{"role": r, "content": c} for r, c in p.messages]
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + p.prefix
        return p.text

    return render


def prepare_benchmarks(cfg: RunConfig, log: Callable[[str], None]) -> tuple[list[tuple[Benchmark, dict[str, ResolvedFile]]], dict[str, str]]:
    """Instantiate benchmarks and resolve the files each will read (local, else downloaded); returns
    (benchmarks, skipped name -> reason).

    A file that can be had neither locally nor by download is an error naming every place looked,
    unless ``skip_unavailable``: then the benchmark is skipped, or, for a benchmark made of independent
    subsets (BBQ categories, BOLD domains), only the subsets whose files are missing are left out and
    recorded. Without ``skip_unavailable`` such a benchmark says which subsets are missing and how to
    score the rest. Nothing at all to run is an error.
    """
    prepared, skipped = [], {}
    for name in cfg.benchmarks:
        cls = bench_registry.get(name)
        b = cls(cfg.options.get(name))
        b.prefer_local(lambda f: is_available(f, cfg.data_dir))
        files: dict[str, ResolvedFile] = {}
        missing: dict[str, DataError] = {}
        for f in b.files():
            try:
                files[f.rel] = resolve(f, cfg.data_dir)
            except DataError as exc:
                missing[f.rel] = exc
        if missing:
            subsets = [s for s in b.subsets() if b.subset_files[s].rel in missing]
            have = [s for s in b.subsets() if s not in subsets]
            if not cfg.skip_unavailable:
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
                log(f"[yellow]{name}: left out {b.subset_option} {', '.join(subsets)} (data not available); "
                    f"scoring {', '.join(have)}[/yellow]")
            else:
                skipped[name] = f"data not available: {', '.join(missing)}"
                continue
        for rel, rf in files.items():
            w = rf.warning(rel)
            if w:
                log(f"[yellow]warning: {w}[/yellow]")
        prepared.append((b, files))
    if not prepared:
        raise DataError("nothing to run: no benchmark's data could be found locally or downloaded ("
                        + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                        + "). Pass --data-dir (docs/data.md) or run where the upstream sources can be reached")
    return prepared, skipped


def build_plan(cfg: RunConfig, strategies: dict[str, Any], base_tokenizer: Any, context: int | None,
               log: Callable[[str], None]) -> RunPlan:
    """Items and rendered requests of every benchmark, computed once with the base tokenizer."""
    prepared, skipped = prepare_benchmarks(cfg, log)
    for name, why in skipped.items():
        log(f"[yellow]skipped {name}: {why}[/yellow]")
    out: list[BenchmarkPlan] = []
    for b, files in prepared:
        chat = b.chat_template_default if cfg.chat_template == "auto" else cfg.chat_template == "on"
        ctx = RequestContext(render=make_renderer(base_tokenizer, chat), seed=cfg.seed, chat_template=chat,
                             tokenize=anchored_tokenize(base_tokenizer))
        items = b.select(b.load({rel: rf.path for rel, rf in files.items()}), cfg.limit_of(b.name), cfg.seed)
        reqs = [r for it in items for r in b.requests(it, ctx)]
        keys = [r.key for r in reqs]
        if len(set(keys)) != len(keys):
            raise DataError(f"benchmark {b.name} produced duplicate request keys (duplicate rows in the data?)")
        rundir.check_prompt_lengths(b.name, reqs, base_tokenizer, context)
        out.append(BenchmarkPlan(b, files, items, reqs, chat))
    if not out:
        raise ConfigError("nothing to run: every requested benchmark was skipped ("
                          + "; ".join(f"{n}: {w}" for n, w in skipped.items()) + "). Provide the data (--data-dir)")
    plan = RunPlan(out, strategies, skipped)
    plan.shared = shared_with_base(cfg, plan)
    return plan


def shared_with_base(cfg: RunConfig, plan: RunPlan) -> dict[str, set[str]]:
    """Per variant, the benchmarks whose answers it takes from the base variant instead of computing them:
    every request of the benchmark is a scoring request (no generation) and the strategy provably leaves
    scoring unchanged (``Strategy.scoring_equals_base``: a KV-cache setting without --quantize-prompt-cache).
    Needs the base variant in the run; ``--no-share-base`` turns it off."""
    if BASE not in plan.strategies or not cfg.share_base_answers:
        return {}
    scoring = {bp.name for bp in plan.benchmarks if bp.scoring_only}
    return {v: set(scoring) for v, s in plan.strategies.items() if v != BASE and scoring and s.scoring_equals_base()}


@dataclass
class PreparedRun:
    """Everything a run needs before it writes anything: the validated strategies, the resolved base model
    and the plan. Built the same way by the runner and by every Ray worker."""

    cfg: RunConfig
    spec: Any
    model_path: Any
    model_info: dict[str, Any]
    tokenizer: Any
    plan: RunPlan


def prepare_run(cfg: RunConfig, log: Callable[[str], None], progress: bool = False,
                check_model: Callable[[Any], None] | None = None) -> PreparedRun:
    """Validate the strategies (nothing built), resolve the base model, check its files, build the plan.
    ``check_model(path)`` runs right after the model is resolved (the runner checks --out against it)."""
    from . import strategies as strat_registry
    from .models import check_weight_files, load_tokenizer, materialise

    strategies = strat_registry.prepare(cfg.strategies, cfg.strategy_settings(progress))
    spec = cfg.spec()
    path, model_info = materialise(spec)
    if check_model is not None:
        check_model(path)
    tok = load_tokenizer(path, spec)
    check_weight_files(path)
    plan = build_plan(cfg, strategies, tok, rundir.model_context(path, tok), log)
    return PreparedRun(cfg, spec, path, model_info, tok, plan)
