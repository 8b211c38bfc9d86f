"""A run resolves only the files its benchmarks will read; missing subsets, changed files and quirks are
handled, recorded in the results and never silently dropped."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from biasshift.benchmarks.bbq import BBQ, FILES as BBQ_FILES
from biasshift.benchmarks.bold import Bold
from biasshift.benchmarks.dialect_ppl import DialectPPL
from biasshift.cli import app
from biasshift.data import DataFile, resolve, sha256_file
from conftest import FIXTURE_DATA

KEEP = ["Age", "Religion", "SES"]


@pytest.fixture()
def partial_bbq(tmp_path):
    root = tmp_path / "data"
    (root / "bbq").mkdir(parents=True)
    for cat in KEEP:
        shutil.copy(FIXTURE_DATA / "bbq" / f"{cat}.jsonl", root / "bbq" / f"{cat}.jsonl")
    return root


def _run(tiny_dir, root, out, *extra):
    return CliRunner().invoke(app, ["run", "--model", str(tiny_dir), "--benchmarks", "bbq", "--data-dir", str(root),
                                    "--out", str(out), "--no-progress", "--batch-size", "8", "--limit", "2", *extra])


def test_bbq_reads_only_the_requested_categories():
    b = BBQ({"categories": "Age,Religion"})
    assert [f.rel for f in b.files()] == ["bbq/Age.jsonl", "bbq/Religion.jsonl"]
    assert len(BBQ().files()) == 11


def test_bbq_with_missing_categories_says_which_and_how(tiny_dir, partial_bbq, tmp_path):
    r = _run(tiny_dir, partial_bbq, tmp_path / "a")
    assert r.exit_code == 2 and "Traceback" not in r.output
    msg = " ".join(r.output.split())
    assert "8 of its 11 categories cannot be had" in msg and "Race_ethnicity" in msg
    assert "--skip-unavailable" in msg and "bbq.categories=Age,Religion,SES" in msg
    assert not (tmp_path / "a" / "results").exists()


def test_bbq_scores_the_available_categories_with_skip_unavailable(tiny_dir, partial_bbq, tmp_path):
    r = _run(tiny_dir, partial_bbq, tmp_path / "b", "--skip-unavailable")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "b" / "results" / "base" / "bbq.json").read_text())
    assert sorted(doc["data_skipped"]["categories"]) == sorted(set(BBQ_FILES) - set(KEEP))
    assert sorted(d["file"] for d in doc["data"]) == [f"bbq/{c}.jsonl" for c in sorted(KEEP)]
    assert set(doc["per_group"]["category"]) <= set(KEEP)
    # explicit categories: no skip needed, nothing recorded as skipped
    r = _run(tiny_dir, partial_bbq, tmp_path / "c", "--option", "bbq.categories=Age,Religion")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "c" / "results" / "base" / "bbq.json").read_text())
    assert doc["data_skipped"] == {} and len(doc["data"]) == 2


def test_nothing_to_run_is_an_error(tiny_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    r = _run(tiny_dir, tmp_path / "empty", tmp_path / "d", "--skip-unavailable")
    assert r.exit_code == 2 and "nothing to run" in " ".join(r.output.split())


def test_local_file_differing_from_pinned_upstream_warns_and_is_recorded(tmp_path):
    spec = DataFile(rel="x/file.txt", sha256="0" * 64)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("my own version\n")
    rf = resolve(spec, tmp_path, download=False)
    assert rf.checksum == "differs" and not rf.verified and rf.expected_sha256 == "0" * 64
    assert "differs from the pinned upstream file" in rf.warning(spec.rel)
    good = DataFile(rel="x/file.txt", sha256=sha256_file(tmp_path / "x" / "file.txt"))
    assert resolve(good, tmp_path, download=False).checksum == "verified"
    assert resolve(DataFile(rel="x/file.txt"), tmp_path, download=False).checksum == "not pinned"


def test_differing_file_recorded_in_result(tiny_dir, partial_bbq, tmp_path):
    r = _run(tiny_dir, partial_bbq, tmp_path / "e", "--option", "bbq.categories=Age")
    assert r.exit_code == 0, r.output
    assert "differs from the pinned upstream file" in " ".join(r.output.split())  # the fixture is not upstream
    doc = json.loads((tmp_path / "e" / "results" / "base" / "bbq.json").read_text())
    d = doc["data"][0]
    assert d["checksum"] == "differs" and d["upstream_sha256"] == BBQ_FILES["Age"].sha256


def test_bold_empty_upstream_prompts_are_skipped_and_counted(tmp_path):
    path = tmp_path / "bold" / "race_prompt.json"
    path.parent.mkdir()
    path.write_text('{"A": {"x": ["one ", "", "two "]}, "B": {"y": ["  ", "three "]}}')
    b = Bold({"domains": "race"})
    items = b.load({"bold/race_prompt.json": path})
    assert [it.fields["prompt"] for it in items] == ["one ", "two ", "three "]
    assert b.quirks == {"empty_prompts_skipped/race": 2}


def test_dialect_upstream_pair_files(tmp_path):
    d = tmp_path / "dialect_ppl"
    d.mkdir()
    (d / "aave_samples.txt").write_text("he be workin\nshe finna go\n\nwe was there")  # no trailing newline
    (d / "sae_samples.txt").write_text("he is usually working\nshe is about to go\nempty on the other side\nwe were there")
    b = DialectPPL()
    b.prefer_local(lambda f: (tmp_path / f.rel).is_file())
    assert [f.rel for f in b.files()] == ["dialect_ppl/aave_samples.txt", "dialect_ppl/sae_samples.txt"]
    items = b.load({f.rel: tmp_path / f.rel for f in b.files()})
    assert [it.id for it in items] == ["L00001", "L00002", "L00004"]
    assert items[2].fields == {"aae": "we was there", "sae": "we were there", "group": None}
    assert b.quirks == {"pairs_with_an_empty_side_skipped": 1}
    (d / "sae_samples.txt").write_text("one\ntwo\n")
    with pytest.raises(Exception, match="not line-aligned"):
        DialectPPL().load({f.rel: tmp_path / f.rel for f in b.files()})
    # the CSV format still works, and auto picks it when only pairs.csv is local
    c = DialectPPL()
    c.prefer_local(lambda f: (FIXTURE_DATA / f.rel).is_file())
    assert [f.rel for f in c.files()] == ["dialect_ppl/pairs.csv"]
    assert len(c.load({f.rel: FIXTURE_DATA / f.rel for f in c.files()})) == 4
