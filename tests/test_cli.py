"""End-to-end CLI runs on the tiny model and fixture data; readable errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from biasshift.cli import app
from conftest import FIXTURE_DATA

runner = CliRunner()
ALL = "crows_pairs,discrim_eval,global_opinion_qa"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    r = invoke("run", "--model", tiny_dir, "--benchmarks", ALL, "--data-dir", FIXTURE_DATA, "--out", out,
               "--batch-size", "4", "--option", "global_opinion_qa.min_questions=2", "--no-progress")
    assert r.exit_code == 0, r.output
    return out


def test_run_writes_results_with_schema(run_dir):
    doc = json.loads((run_dir / "results/base/crows_pairs.json").read_text())
    for key in ("schema_version", "benchmark", "model", "variant", "inference", "data", "metrics", "per_group",
                "primary", "n", "library_versions", "rates", "notes"):
        assert key in doc
    assert doc["inference"]["dtype"] == "float32"
    assert doc["inference"]["seed"] == 0
    assert doc["inference"]["chat_template"] is False
    assert doc["inference"]["engine"]["prepend_bos"] is True
    assert doc["model"]["fingerprint"].startswith("dir-sha256:")
    assert doc["variant"]["strategy"] == "base"
    assert doc["n"] == 6 and doc["primary"]["metric"] == "pct_stereotype"
    assert doc["data"][0]["sha256"] and doc["data"][0]["origin"] == "data_dir"
    assert "torch" in doc["library_versions"] and "transformers" in doc["library_versions"]
    de = json.loads((run_dir / "results/base/discrim_eval.json").read_text())
    assert de["n"] == 2 and set(de["per_group"]) == {"age", "gender", "race"}
    go = json.loads((run_dir / "results/base/global_opinion_qa.json").read_text())
    assert go["metrics"]["n_countries"] == 3 and go["primary"]["value"] is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["variants"]["base"]) == set(ALL.split(","))
    units = (run_dir / "units/base/crows_pairs.jsonl").read_text().splitlines()
    assert len(units) == 6


def test_results_match_a_direct_recomputation(run_dir, tiny):
    """CrowS pct from the run equals a computation straight from the model, outside biasshift's engine."""
    import torch

    model, tok = tiny
    doc = json.loads((run_dir / "results/base/crows_pairs.json").read_text())
    import csv

    rows = list(csv.DictReader(open(FIXTURE_DATA / "crows_pairs/crows_pairs_anonymized.csv")))

    def score(s):
        ids = tok(s)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
        return float(lp.gather(1, torch.tensor(ids[1:])[:, None]).mean())

    expected = 100 * sum(score(r["sent_more"]) > score(r["sent_less"]) for r in rows) / len(rows)
    assert doc["primary"]["value"] == pytest.approx(expected)


def test_rerun_is_a_no_op_and_identical(run_dir, tiny_dir):
    before = (run_dir / "results/base/discrim_eval.json").read_text()
    r = invoke("run", "--model", tiny_dir, "--benchmarks", ALL, "--data-dir", FIXTURE_DATA, "--out", run_dir,
               "--batch-size", "4", "--option", "global_opinion_qa.min_questions=2", "--no-progress")
    assert r.exit_code == 0, r.output
    after = json.loads((run_dir / "results/base/discrim_eval.json").read_text())
    assert after["metrics"] == json.loads(before)["metrics"]


def test_list_shows_benchmarks():
    r = invoke("list")
    assert r.exit_code == 0
    for name in ("crows_pairs", "discrim_eval", "global_opinion_qa", "base"):
        assert name in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model", "--benchmarks", "crows_pairs"], "does not exist"),
        (["--benchmarks", "nope"], "unknown benchmark 'nope'"),
        (["--benchmarks", "crows_pairs", "--batch-size", "lots"], "--batch-size must be"),
        (["--benchmarks", "crows_pairs", "--dtype", "int3"], "--dtype must be"),
        (["--benchmarks", "crows_pairs", "--option", "crows_pairs.score=median"], "must be 'mean' or 'sum'"),
        (["--benchmarks", "crows_pairs", "--option", "badformat"], "BENCHMARK.KEY=VALUE"),
        (["--benchmarks", "crows_pairs", "--chat-template", "maybe"], "--chat-template must be"),
    ],
)
def test_bad_input_gives_a_readable_error(args, message, tiny_dir, tmp_path):
    full = ["run", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--data-dir", str(FIXTURE_DATA), "--no-progress"]
    # later options override earlier ones
    r = runner.invoke(app, full + args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_missing_data_error_names_every_place_looked(tiny_dir, tmp_path):
    r = runner.invoke(app, ["run", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--benchmarks", "discrim_eval",
                            "--data-dir", str(tmp_path / "empty"), "--no-progress"])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    from biasshift.benchmarks.discrim_eval import EXPLICIT_FILE

    source = EXPLICIT_FILE.url or f"hf://datasets/{EXPLICIT_FILE.hf_repo}"  # wherever the data file is pinned to
    assert "discrim_eval/explicit.jsonl" in text and source in text
    assert "Traceback" not in r.output


def test_skip_unavailable_reports_skips(tiny_dir, tmp_path):
    # issue 13 item 5: every benchmark unavailable is an error (exit 2, nothing written), not an empty success
    r = runner.invoke(app, ["run", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--benchmarks", "crows_pairs,discrim_eval",
                            "--data-dir", str(tmp_path / "empty"), "--skip-unavailable", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "nothing to run" in r.output and "crows_pairs" in r.output and "discrim_eval" in r.output
    assert not (tmp_path / "o").exists()
    data = tmp_path / "some"
    (data / "crows_pairs").mkdir(parents=True)
    (data / "crows_pairs/crows_pairs_anonymized.csv").write_bytes((FIXTURE_DATA / "crows_pairs/crows_pairs_anonymized.csv").read_bytes())
    r = runner.invoke(app, ["run", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--benchmarks", "crows_pairs,discrim_eval",
                            "--data-dir", str(data), "--skip-unavailable", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "skipped discrim_eval" in r.output
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert set(summary["skipped"]) == {"discrim_eval"} and set(summary["variants"]["base"]) == {"crows_pairs"}


def test_chat_template_on_changes_prompts_and_is_recorded(tiny_dir, tmp_path):
    out = tmp_path / "chat"
    r = invoke("run", "--model", tiny_dir, "--benchmarks", "discrim_eval", "--data-dir", FIXTURE_DATA, "--out", out,
               "--chat-template", "on", "--limit", "1", "--no-progress")
    assert r.exit_code == 0, r.output
    from biasshift.store import RunStore

    recs = RunStore(out / "store.sqlite").records("base", "discrim_eval")
    assert len(recs) == 12  # --limit 1 keeps one whole question (12 demographic rows in the fixture)
    assert recs[0]["request"]["prompt"].startswith("<s>user\n")
    assert recs[0]["request"]["prompt"].endswith('<s>assistant\nBased on the information provided if I had to choose between "yes" and "no" my answer would be "')
    doc = json.loads((out / "results/base/discrim_eval.json").read_text())
    assert doc["inference"]["chat_template"] is True and doc["limit"] == 1
