"""The typed result document (biasshift.results) and the report's reading of documents old and new, plus the
benchmarks' vectorised weighted metrics (Benchmark.weighted_metric) against compute() itself."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from report_helpers import CROWS_BASE, CROWS_INT8, GOQA_BASE, GOQA_SKEW, dt_units, goqa_units, standard_run, write_run

from biasshift.errors import BiasshiftError, DataError
from biasshift.results import ResultDoc, build_result_doc, load_result, parse_result

OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"


# ------------------------------------------------------------------------------------------ the document model
def test_documents_round_trip_byte_for_byte(tmp_path):
    from biasshift.rundir import write_json

    d = standard_run(tmp_path / "r")
    files = sorted((d / "results").glob("*/*.json"))
    assert len(files) == 9
    for f in files:
        text = f.read_text()
        doc = load_result(f)
        assert doc.model_dump(mode="json") == json.loads(text)
        write_json(tmp_path / "again.json", doc.model_dump(mode="json"))
        assert (tmp_path / "again.json").read_text() == text  # same keys, order and number types


def test_constructor_helper_writes_the_documented_layout():
    from types import SimpleNamespace

    from biasshift import benchmarks as registry

    b = registry.get("dt_stereotyping")()
    res = b.compute(dt_units(CROWS_BASE))
    vinfo = {"strategy": "int8", "config": {"bits": 8}, "memory_footprint_bytes": 10, "build_seconds": 1.25,
             "measured": {"bits_per_weight": 8.0}, "engine": {"batch_size": 4}, "requested": {"not": "written"}}
    tp = {"kind": "generate", "requests": 20, "seconds": 2.5, "forward_tokens": 100, "generated_tokens": 40,
          "shared_with_base": False}
    model_info = {"model_id": "m", "source_kind": "hub", "revision": None, "fingerprint": "hub:m@x", "extra": 1}
    rf = SimpleNamespace(path="/d/f.csv", sha256="ab", origin="data_dir", verified=True, checksum="verified",
                         expected_sha256="ab")
    got = build_result_doc(b, res, "int8", vinfo, model_info, {"dt/f.csv": rf}, True, "float32", "cpu", 20, 20, 1.23456,
                           dict(tp), seed=3, limit=7, created="2026-12-01T00:00:00+00:00", versions={"biasshift": "0.1.0"})
    out = got.model_dump(mode="json")
    assert list(out) == ["schema_version", "created", "benchmark", "model", "variant", "inference", "data", "data_quirks",
                         "data_skipped", "limit", "n_items", "n_requests", "answers", "throughput", "n", "primary",
                         "metrics", "per_group", "rates", "notes", "library_versions", "seconds"]
    assert out["benchmark"] == {
        "name": "dt_stereotyping", "title": b.title, "version": b.version, "kind": "generation",
        "options": b.options_json() if hasattr(b, "options_json") else dict(b.options), "primary_metric": "agreement_index",
        "primary_description": b.primary_description, "higher_is_more_biased": True, "neutral": None, "outcome": "binary"}
    assert out["benchmark"]["options"] == json.loads(json.dumps(out["benchmark"]["options"]))  # plain JSON values
    assert out["model"] == {"model_id": "m", "source_kind": "hub", "revision": None, "fingerprint": "hub:m@x"}
    assert out["variant"] == {"name": "int8", "strategy": "int8", "config": {"bits": 8}, "memory_footprint_bytes": 10,
                              "architecture": None, "n_parameters": None, "build_seconds": 1.25,
                              "measured": {"bits_per_weight": 8.0}}
    assert out["inference"] == {"dtype": "float32", "device": "cpu", "chat_template": True, "seed": 3,
                                "engine": {"batch_size": 4}}
    assert out["data"] == [{"file": "dt/f.csv", "path": "/d/f.csv", "sha256": "ab", "origin": "data_dir",
                            "checksum_verified": True, "checksum": "verified", "upstream_sha256": "ab"}]
    assert (out["limit"], out["n_items"], out["n_requests"], out["answers"], out["throughput"]) == (7, 20, 20, "computed", tp)
    assert out["n"] == 20 and out["primary"] == {"metric": "agreement_index", "value": 25.0}
    assert out["metrics"] == res.metrics and out["per_group"] == res.per_group and out["notes"] == res.notes
    assert out["seconds"] == 1.235 and out["library_versions"] == {"biasshift": "0.1.0"}
    shared = build_result_doc(b, res, "kv8", {}, model_info, {}, False, "float32", "cpu", 20, 20, 0.0,
                              dict(tp, shared_with_base=True), seed=0, limit=None).model_dump(mode="json")
    assert shared["answers"] == "shared with base" and shared["variant"]["strategy"] == "kv8"
    assert "measured" not in shared["variant"] and "notes" not in shared["variant"]


def test_unknown_keys_are_kept_and_measured_and_notes_only_when_given(tmp_path):
    d = standard_run(tmp_path / "r", variants=("int8",))
    raw = json.loads((d / "results/int8/discrim_eval.json").read_text())
    assert "measured" not in raw["variant"] and "notes" not in raw["variant"]  # the helper's strategy has neither
    raw["future_field"] = {"a": 1}
    raw["benchmark"]["is_quality_metric"] = False
    doc = parse_result(raw)
    out = doc.model_dump(mode="json")
    assert out["future_field"] == {"a": 1} and out["benchmark"]["is_quality_metric"] is False
    assert "measured" not in out["variant"] and "notes" not in out["variant"]


def test_a_bad_document_names_the_file_and_the_field(tmp_path):
    d = standard_run(tmp_path / "r", variants=("int8",))
    p = d / "results/int8/discrim_eval.json"
    raw = json.loads(p.read_text())
    del raw["benchmark"]["primary_metric"]
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"field required \(file .*int8/discrim_eval.json, field 'benchmark.primary_metric'\)"):
        load_result(p)
    from biasshift.report import load_run

    with pytest.raises(BiasshiftError, match="benchmark.primary_metric"):
        load_run(d)
    raw["benchmark"]["primary_metric"] = "max_min"
    raw["n"] = "many"
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"valid integer.*'many'.*field 'n'"):
        load_result(p)
    raw["n"], raw["schema_version"] = 4, 2
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="schema_version 2 was written by a newer biasshift"):
        load_result(p)
    p.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_result(p)


# ------------------------------------------------------------------------------------------ an old document
def test_an_old_document_reads_with_its_documented_defaults():
    doc = load_result(OLD_RUN / "results/int8/crows_pairs.json")
    assert isinstance(doc, ResultDoc)
    assert doc.throughput is None and doc.answers == "computed" and doc.data_quirks == {} and doc.data_skipped == {}
    assert doc.variant.build_seconds is None and doc.data[0].checksum is None and doc.data[0].upstream_sha256 is None
    assert doc.benchmark.neutral is None and not doc.benchmark.declares_neutral
    assert doc.value == 25.0 and doc.metric("pct_stereotype") == 25.0  # 2 of 8 pairs


def test_report_of_an_old_run_directory(tmp_path):
    from biasshift.report import build_report, to_markdown, write_report

    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    rep = build_report([run], n_boot=200, n_perm=200, samples=0)
    r = next(r for r in rep.rows if r.benchmark == "crows_pairs" and r.primary)
    # the neutral point comes from the benchmark class (the document predates `neutral`): 50
    assert (r.base, r.value, r.neutral) == (62.5, 25.0, 50.0)
    assert (r.dist_base, r.dist_value, r.dist_change) == (12.5, 25.0, 12.5)
    assert (r.mcnemar_b, r.mcnemar_c) == (3, 0) and r.p_value is not None
    eff = {e.variant: e for e in rep.efficiency}
    assert eff["int8"].not_measured == ["crows_pairs"] and eff["int8"].memory_saved == pytest.approx(0.4)
    assert "crows_pairs" in to_markdown(rep)
    assert {p.name for p in write_report(rep, tmp_path / "out")} >= {"report.html", "report.md", "comparison.json"}


# ------------------------------------------------------------------------------------------ weighted metrics
def _expand(units, w):
    return [u for u, k in zip(units, w) for _ in range(int(k))]


def _unqover_units(n, seed):
    rnd = random.Random(seed)
    subj = {"country": ["A", "B", "C", "D"], "religion": ["x", "y", "z"], "gender_occupation": ["ann", "bob", "cy"]}
    out = []
    for i in range(n):
        cat = rnd.choice(sorted(subj))
        s1, s2 = rnd.sample(subj[cat], 2)
        out.append({"unit": f"u{i}", "category": cat, "subjects": [s1, s2], "genders": ["female", "male"],
                    "attribute": rnd.choice(["a1", "a2", "a3"]), "win": rnd.choice([0.0, rnd.uniform(-2, 2)]),
                    "positional_error": rnd.random(), "order_flips": rnd.randint(0, 2)})
    return out


@pytest.mark.parametrize("metric", ["mu", "eta", "country_mu", "religion_eta", "ethnicity_mu"])
def test_unqover_weighted_metric_equals_compute(metric):
    from biasshift.benchmarks.unqover import UnQover

    b = UnQover()
    units = _unqover_units(40, 1)
    f = b.weighted_metric(metric, units)
    rng = np.random.default_rng(0)
    for w in [np.ones(40)] + [rng.integers(0, 3, size=40) for _ in range(20)] + [np.zeros(40)]:
        want = b.compute(_expand(units, w)).metrics.get(metric) if w.sum() else None
        got = f(w.astype(float))
        assert (got is None) == (want is None), (metric, w)
        if want is not None:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert b.weighted_metric("positional_error", units) is None  # no fast path: the report recomputes


@pytest.mark.parametrize("metric", ["gini_wasserstein", "mean_median_wasserstein", "mean_similarity_1mjsd",
                                    "gini_similarity_1mjsd"])
def test_global_opinion_weighted_metric_equals_compute(metric):
    from biasshift.benchmarks.global_opinion_qa import GlobalOpinionQA

    b = GlobalOpinionQA({"min_questions": 3})
    units = goqa_units(GOQA_BASE + GOQA_SKEW)
    f = b.weighted_metric(metric, units)
    rng = np.random.default_rng(1)
    for w in [np.ones(12)] + [rng.integers(0, 3, size=12) for _ in range(30)]:
        want = b.compute(_expand(units, w)).metrics[metric]
        got = f(w.astype(float))
        assert (got is None) == (want is None)
        if want is not None:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_unqover_report_fast_path_equals_recomputation(tmp_path, monkeypatch):
    from biasshift.report import build_report, fast

    base = _unqover_units(30, 2)
    var = [dict(u, win=u["win"] * (1.5 if i % 3 else -0.5)) for i, u in enumerate(base)]
    d = write_run(tmp_path / "r", {"base": {"unqover": base}, "int8": {"unqover": var}})
    quick = build_report([d], n_boot=100, n_perm=100, samples=0)
    monkeypatch.setattr(fast, "evaluator", lambda bench, metric, ub, uv, f, vb, vv: fast.Recompute(f, ub, uv))
    slow = build_report([d], n_boot=100, n_perm=100, samples=0)
    a, b = quick.rows[0], slow.rows[0]
    assert "vectorised unqover" in a.ci_method and "recomputed with compute" in b.ci_method
    assert (a.base, a.value) == pytest.approx((b.base, b.value))
    assert (a.ci_low, a.ci_high, a.p_value) == pytest.approx((b.ci_low, b.ci_high, b.p_value), abs=1e-9)


def test_a_wrong_weighted_metric_falls_back_to_compute(tmp_path, monkeypatch):
    from biasshift.benchmarks.dt_stereotyping import DTStereotyping
    from biasshift.report import build_report

    d = write_run(tmp_path / "r", {"base": {"dt_stereotyping": dt_units(CROWS_BASE)},
                                   "int8": {"dt_stereotyping": dt_units(CROWS_INT8)}})
    monkeypatch.setattr(DTStereotyping, "weighted_metric", lambda self, metric, units: (lambda w: 1.0))
    rep = build_report([d], metrics=["dt_stereotyping.dt_score"], n_boot=50, n_perm=50, samples=0)
    r = next(r for r in rep.rows if r.metric == "dt_score")
    assert "recomputed with compute" in r.ci_method and any("did not reproduce compute()" in n for n in r.notes)


# ------------------------------------------------------------------------------------------ the store, read-only
def test_store_reader_is_read_only_and_quiet_without_a_store(tmp_path):
    from biasshift.engine.requests import GenerateRequest, Keyed
    from biasshift.store import RunStore, StoreReader

    missing = StoreReader(tmp_path / "none" / "store.sqlite")
    assert not missing.available and missing.request("base", "b", "k") is None and missing.first_requests("base", "b", 5) == []
    assert not (tmp_path / "none").exists()  # nothing created
    db = tmp_path / "store.sqlite"
    with RunStore(db) as store:
        store.put_many("base", "b", [(Keyed(f"k{i}", "i", GenerateRequest(prompt=f"p{i}", max_new_tokens=4)),
                                      {"samples": [{"text": f"t{i}", "n_tokens": 1, "finish": "eos"}]}) for i in range(3)])
    before = db.read_bytes()
    with StoreReader(db) as r:
        assert r.available and r.has("base", "b") and not r.has("int8", "b")
        assert r.request("base", "b", "k1")["prompt"] == "p1" and r.request("base", "b", "zz") is None
        assert r.response("base", "b", "k2")["samples"][0]["text"] == "t2"
        assert [k for k, _ in r.first_requests("base", "b", 2)] == ["k0", "k1"]
    assert db.read_bytes() == before
    (tmp_path / "bad.sqlite").write_text("not a database")
    assert not StoreReader(tmp_path / "bad.sqlite").available
