"""Benchmark registry. Adding a benchmark = one module with a ``Benchmark`` subclass + one line here."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import Benchmark

# name -> "module:Class"; modules are imported on first use so a broken optional one cannot break the rest
_REGISTRY: dict[str, str] = {
    "crows_pairs": "biasshift.benchmarks.crows_pairs:CrowsPairs",
    "discrim_eval": "biasshift.benchmarks.discrim_eval:DiscrimEval",
    "global_opinion_qa": "biasshift.benchmarks.global_opinion_qa:GlobalOpinionQA",
    "dt_stereotyping": "biasshift.benchmarks.dt_stereotyping:DTStereotyping",
    "dt_stereotyping_sampled": "biasshift.benchmarks.dt_stereotyping:DTStereotypingSampled",
    "discrim_eval_gen": "biasshift.benchmarks.discrim_eval_gen:DiscrimEvalGen",
    "worldbench": "biasshift.benchmarks.worldbench:WorldBench",
    "bbq": "biasshift.benchmarks.bbq:BBQ",
    "bold": "biasshift.benchmarks.bold:Bold",
    "dialect_ppl": "biasshift.benchmarks.dialect_ppl:DialectPPL",
    "perplexity": "biasshift.benchmarks.perplexity:Perplexity",
    "toxigen": "biasshift.benchmarks.toxigen:ToxiGen",
    "realtoxicityprompts": "biasshift.benchmarks.realtoxicityprompts:RealToxicityPrompts",
    "regard": "biasshift.benchmarks.regard:Regard",
    "holistic_bias": "biasshift.benchmarks.holistic_bias:HolisticBias",
    "mmlu": "biasshift.benchmarks.mmlu:MMLU",
    "aave_literature": "biasshift.benchmarks.aave_literature:AAVELiterature",
    "unqover": "biasshift.benchmarks.unqover:UnQover",
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> type[Benchmark]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(_REGISTRY)} (see `biasshift list`)")
    mod, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod), cls)


def parse_list(spec: str) -> list[str]:
    """``all`` or a comma-separated list of names, validated, duplicates removed, order kept."""
    if spec.strip() == "all":  # every benchmark that can run without a setting only the user can give
        return [n for n in names() if not get(n).not_in_all]
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        get(part)
        if part not in out:
            out.append(part)
    if not out:
        raise ConfigError("--benchmarks is empty")
    return out
