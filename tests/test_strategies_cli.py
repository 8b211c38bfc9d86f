"""`biasshift run` with acceleration strategies, end to end on the tiny model and the fixture data."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from biasshift.cli import app
from conftest import FIXTURE_DATA
from test_strategies import write_calib

runner = CliRunner()

needs_quant = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None or importlib.util.find_spec("hqq") is None,
    reason="needs the quant extra (bitsandbytes, hqq)",
)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def calib_txt(tmp_path_factory):
    return write_calib(tmp_path_factory.mktemp("cli_calib") / "calib.txt")


def base_args(tiny_dir, out, calib):
    return ["run", "--model", tiny_dir, "--benchmarks", "crows_pairs,discrim_eval", "--data-dir", FIXTURE_DATA,
            "--out", out, "--batch-size", "4", "--no-progress", "--calib-data", calib, "--calib-samples", "4",
            "--calib-seqlen", "32"]


@needs_quant
def test_cli_runs_every_strategy_end_to_end(tiny_dir, calib_txt, tmp_path):
    out = tmp_path / "run"
    r = invoke(*base_args(tiny_dir, out, calib_txt), "--strategies", "base,int8,kv4,wanda")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["variants"]) == ["base", "int8", "kv4", "wanda"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["calib_samples"] == 4 and cfg["calib_data"] == str(calib_txt) and cfg["quantize_prompt_cache"] is False
    docs = {(v, b): json.loads((out / "results" / v / f"{b}.json").read_text())
            for v in summary["variants"] for b in ("crows_pairs", "discrim_eval")}
    for (v, _b), doc in docs.items():
        var = doc["variant"]
        assert var["name"] == v and var["strategy"] == v
        assert var["memory_footprint_bytes"] > 0 and "measured" in var and "notes" in var
        assert doc["inference"]["dtype"] == "float32"
    assert docs["int8", "crows_pairs"]["variant"]["config"]["llm_int8_threshold"] == 6.0
    assert docs["int8", "crows_pairs"]["variant"]["measured"]["linear_types"] == {"bnb_int8": 14}
    assert docs["kv4", "discrim_eval"]["variant"]["config"]["backend"] == "hqq"
    assert docs["wanda", "crows_pairs"]["variant"]["measured"]["sparsity"] == 0.5
    assert docs["wanda", "crows_pairs"]["variant"]["config"]["calib_samples"] == 4
    assert (docs["int8", "crows_pairs"]["variant"]["memory_footprint_bytes"]
            < docs["base", "crows_pairs"]["variant"]["memory_footprint_bytes"])
    # kv4 without --quantize-prompt-cache: scoring benchmarks equal the base model's exactly
    for b in ("crows_pairs", "discrim_eval"):
        assert docs["kv4", b]["metrics"] == docs["base", b]["metrics"]
    # a changed strategy setting is refused on resume instead of mixing results
    r = runner.invoke(app, [str(a) for a in base_args(tiny_dir, out, calib_txt)][:-2] + ["--calib-seqlen", "24",
                                                                                         "--strategies", "wanda"])
    assert r.exit_code == 2 and "wanda" in r.output and "other settings" in r.output
    assert "Traceback" not in r.output


@needs_quant
def test_cli_quantize_prompt_cache(tiny_dir, calib_txt, tmp_path):
    out = tmp_path / "qpc"
    r = invoke(*base_args(tiny_dir, out, calib_txt), "--benchmarks", "discrim_eval", "--strategies", "kv4",
               "--quantize-prompt-cache", "--limit", "1")
    assert r.exit_code == 0, r.output
    base = json.loads((out / "results/base/discrim_eval.json").read_text())
    kv = json.loads((out / "results/kv4/discrim_eval.json").read_text())
    assert kv["variant"]["config"]["quantize_prompt_cache"] is True
    assert kv["metrics"] != base["metrics"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategies", "awq@w3g128"], "3 bits is not supported"),
        (["--strategies", "int8+int4"], "two weight quantizers"),
        (["--strategies", "kv4+kv8"], "two KV-cache settings"),
        (["--strategies", "awq", "--strategy-checkpoint", "int8=x"], "only awq, gptq"),
        (["--strategies", "int8", "--strategy-checkpoint", "awq=x"], "not in this run: awq"),
        (["--strategies", "wanda", "--calib-data", "/nonexistent/calib.txt"], "--calib-data"),
    ],
)
def test_strategy_errors_are_readable(args, message, tiny_dir, tmp_path):
    r = runner.invoke(app, ["run", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--benchmarks", "crows_pairs",
                            "--data-dir", str(FIXTURE_DATA), "--no-progress", *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output
    assert not (tmp_path / "o" / "results").exists()  # failed before any variant was built


def test_calibration_failure_is_readable(tiny_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    r = runner.invoke(app, ["run", "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--benchmarks", "crows_pairs",
                            "--data-dir", str(FIXTURE_DATA), "--no-progress", "--strategies", "wanda",
                            "--calib-data", str(short), "--calib-seqlen", "64", "--calib-samples", "2"])
    assert r.exit_code == 2, r.output
    assert "calibration data" in r.output and "too short" in r.output
    assert "Traceback" not in r.output
