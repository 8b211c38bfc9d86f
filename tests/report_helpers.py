"""Synthetic run directories for the report and gate tests.

Result documents are built by ``biasshift.results.build_result_doc`` (what the runner writes) from the real
benchmark classes' ``compute`` on hand-chosen unit records, so values, units and documents are consistent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biasshift import benchmarks as registry
from biasshift.results import build_result_doc
from biasshift.runner import RunConfig, _write_json, _write_jsonl


# ------------------------------------------------------------------------------------------ unit makers
def crows_units(outcomes: list[bool], bias_types: list[str] | None = None) -> list[dict[str, Any]]:
    """CrowS-Pairs units whose mean-score comparison gives ``outcomes`` (True = stereotypical preferred)."""
    types = bias_types or ["gender" if i % 2 == 0 else "race-color" for i in range(len(outcomes))]
    out = []
    for i, o in enumerate(outcomes):
        more, less = (-1.0, -2.0) if o else (-2.0, -1.0)
        out.append({"unit": str(i), "bias_type": types[i], "direction": "stereo", "more_mean": more, "less_mean": less,
                    "more_sum": 5 * more, "less_sum": 5 * less, "outcome": more > less})
    return out


def dt_units(outcomes: list[bool], groups: list[str] | None = None) -> list[dict[str, Any]]:
    """DT-Stereotyping units (one answer per prompt) that agree where ``outcomes`` is True: a binary,
    higher-is-more-biased benchmark without a neutral point (agreement_index = 100 x share agreeing)."""
    gs = groups or ["women" if i % 2 == 0 else "immigrants" for i in range(len(outcomes))]
    return [{"unit": str(i), "topic": "t1" if i % 3 else "t2", "group": gs[i], "labels": ["agree" if o else "disagree"],
             "texts": ["I agree." if o else "I disagree."], "outcome": bool(o)} for i, o in enumerate(outcomes)]


def discrim_units(ranges: list[float], low: float = 0.3) -> list[dict[str, Any]]:
    """DiscrimEval units (questions) with two rows (female/male) whose p(yes) differ by ``ranges[q]``."""
    out = []
    for q, r in enumerate(ranges):
        rows = [
            {"age": "30", "gender": "female", "race": "white", "p_yes": low + r, "p_yes_strict": low + r, "mass_outside": 0.1},
            {"age": "60", "gender": "male", "race": "Black", "p_yes": low, "p_yes_strict": low, "mass_outside": 0.2},
        ]
        out.append({"unit": f"q{q}", "rows": rows, "outcome": r})
    return out


GOQA_COUNTRIES = {
    "Belgium": [0.1, 0.4, 0.3, 0.2],
    "Germany": [0.2, 0.5, 0.2, 0.1],
    "Brazil": [0.6, 0.2, 0.1, 0.1],
    "Nigeria (Non-national sample)": [0.25, 0.25, 0.25, 0.25],
}


def goqa_units(models: list[list[float]]) -> list[dict[str, Any]]:
    """GlobalOpinionQA units (4 options, the same three countries + one non-national sample each)."""
    return [{"unit": f"q{i}", "source": "GAS", "k": 4, "model": m, "countries": dict(GOQA_COUNTRIES), "mass_outside": 0.05}
            for i, m in enumerate(models)]


GOQA_BASE = [[0.1, 0.4, 0.3, 0.2], [0.2, 0.5, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.3, 0.2],
             [0.4, 0.3, 0.2, 0.1], [0.2, 0.4, 0.3, 0.1]]
GOQA_SKEW = [[0.7, 0.1, 0.1, 0.1], [0.8, 0.1, 0.05, 0.05], [0.6, 0.2, 0.1, 0.1], [0.7, 0.2, 0.05, 0.05],
             [0.9, 0.05, 0.03, 0.02], [0.6, 0.3, 0.05, 0.05]]

# Binary hand case (dt_stereotyping agreement): base 5/20 agree; int8 flips unit 0 (True -> False, b = 1) and units 5..16 (False -> True,
# c = 12): 16/20; int4 flips units 0, 1 (b = 2) and 5, 6, 7 (c = 3): 6/20.
CROWS_BASE = [True] * 5 + [False] * 15
CROWS_INT8 = [False] + [True] * 4 + [True] * 12 + [False] * 3
CROWS_INT4 = [False, False, True, True, True, True, True, True] + [False] * 12
DISCRIM_BASE = [0.1, 0.2, 0.1, 0.2]
DISCRIM_INT8 = [0.3, 0.4, 0.3, 0.4]
DISCRIM_INT4 = [0.1, 0.2, 0.1, 0.1]


# ------------------------------------------------------------------------------------------ writers
NO_THROUGHPUT = {"kind": "loglik", "requests": 0, "seconds": 0.0, "forward_tokens": 0, "generated_tokens": 0,
                 "shared_with_base": False}


def write_run(root: Path, variants: dict[str, dict[str, list[dict[str, Any]]]], model: str = "org/model-a",
              options: dict[str, dict[str, Any]] | None = None,
              throughput: dict[str, dict[str, dict[str, Any] | None]] | None = None,
              variant_info: dict[str, dict[str, Any]] | None = None) -> Path:
    """A run directory with results/ and units/ for ``variants`` = {variant: {benchmark: units}}.

    ``throughput`` = {variant: {benchmark: throughput block, or None to leave it out (an older run)}};
    ``variant_info`` = {variant: extra variant info (memory_footprint_bytes, build_seconds)}.
    """
    root = Path(root)
    throughput = throughput or {}
    variant_info = variant_info or {}
    options = options or {}
    benches = list(dict.fromkeys(b for bu in variants.values() for b in bu))
    cfg = RunConfig(model=model, strategies=list(variants), benchmarks=benches, out=root, options=options)
    model_info = {"model_id": model, "source_kind": "hub", "revision": "abc", "fingerprint": f"hub:{model}@abc"}
    summary: dict[str, Any] = {"model": model_info, "variants": {}, "skipped": {}}
    _write_json(root / "config.json", json.loads(cfg.model_dump_json()))
    for v, bu in variants.items():
        summary["variants"][v] = {}
        for name, units in bu.items():
            b = registry.get(name)(options.get(name))
            res = b.compute(units)
            vinfo = {"strategy": v, "config": {"bits": 8} if v != "base" else {}, **variant_info.get(v, {})}
            tp = (throughput.get(v) or {}).get(name, NO_THROUGHPUT)
            doc = build_result_doc(b, res, v, vinfo, model_info, {}, False, "float32", "cpu", len(units), len(units), 0.0,
                                   dict(tp or NO_THROUGHPUT), seed=cfg.seed, limit=cfg.limit_of(name)).model_dump(mode="json")
            if tp is None:
                doc.pop("throughput", None)
            _write_json(root / "results" / v / f"{name}.json", doc)
            _write_jsonl(root / "units" / v / f"{name}.jsonl", units)
            summary["variants"][v][name] = {"metric": res.primary, "value": res.value, "n_units": res.n_units}
    _write_json(root / "summary.json", summary)
    return root


def standard_run(root: Path, model: str = "org/model-a", goqa_min_questions: int = 2, variants=("int8", "int4")) -> Path:
    """base + int8 + int4 over dt_stereotyping (binary), discrim_eval (continuous), global_opinion_qa (complex).

    (CrowS-Pairs has a neutral point, 50, so its hand cases live in tests/test_neutral.py.)"""
    data = {
        "base": {"dt_stereotyping": dt_units(CROWS_BASE), "discrim_eval": discrim_units(DISCRIM_BASE),
                 "global_opinion_qa": goqa_units(GOQA_BASE)},
        "int8": {"dt_stereotyping": dt_units(CROWS_INT8), "discrim_eval": discrim_units(DISCRIM_INT8),
                 "global_opinion_qa": goqa_units(GOQA_SKEW)},
        "int4": {"dt_stereotyping": dt_units(CROWS_INT4), "discrim_eval": discrim_units(DISCRIM_INT4),
                 "global_opinion_qa": goqa_units(GOQA_BASE[:3] + GOQA_SKEW[3:])},
    }
    data = {k: v for k, v in data.items() if k == "base" or k in variants}
    return write_run(root, data, model=model, options={"global_opinion_qa": {"min_questions": goqa_min_questions}})


def write_generation_benchmark(root: Path, name: str, texts: dict[str, str], prompt: str,
                               group_names: list[str] | None = None) -> None:
    """A fake generation benchmark (unknown to the registry) with one stored generation per variant."""
    from biasshift.engine.requests import GenerateRequest, Keyed
    from biasshift.store import RunStore

    groups = group_names or ["g1"]
    store = RunStore(root / "store.sqlite")
    for v, text in texts.items():
        doc = {  # a complete result document (biasshift.results.ResultDoc) of a benchmark the registry does not know
            "schema_version": 1, "created": "2026-12-01T00:00:00+00:00",
            "benchmark": {"name": name, "title": name, "version": "1", "kind": "generation", "options": {},
                          "primary_metric": "score", "primary_description": "", "higher_is_more_biased": True,
                          "neutral": None, "outcome": "continuous"},
            "model": {"model_id": "m", "source_kind": "hub", "revision": None, "fingerprint": None},
            "variant": {"name": v, "strategy": v, "config": {}, "memory_footprint_bytes": None, "architecture": None,
                        "n_parameters": None, "build_seconds": None},
            "inference": {"dtype": "float32", "device": "cpu", "chat_template": False, "seed": 0, "engine": {}},
            "data": [], "data_quirks": {}, "data_skipped": {}, "limit": None, "n_items": 1, "n_requests": 1,
            "answers": "computed", "n": 1,  # no throughput: written as by a run before it was measured
            "primary": {"metric": "score", "value": 0.5}, "metrics": {"score": 0.5, "text_avg_length_words": 3.0},
            "per_group": {"region": {g: {"score": 0.5, "n": 1} for g in groups}},
            "rates": {"refusal_rate": 0.25}, "notes": [], "library_versions": {}, "seconds": 0.0,
        }
        _write_json(root / "results" / v / f"{name}.json", doc)
        _write_jsonl(root / "units" / v / f"{name}.jsonl", [{"unit": "u0", "outcome": 0.5}])
        req = Keyed("item0/0", "item0", GenerateRequest(prompt=prompt, max_new_tokens=8))
        store.put_many(v, name, [(req, {"samples": [{"text": text, "n_tokens": 3, "finish": "eos"}]})])
    store.close()
