"""MMLU: loading, the standard prompt, letter scoring and accuracy by hand (fixture in the hendrycks CSV format)."""

from __future__ import annotations

import shutil

import pytest
import torch

from biasshift import benchmarks
from biasshift.benchmarks.base import RequestContext
from biasshift.benchmarks.mmlu import MMLU, SUBJECTS
from biasshift.engine.hf import HFEngine
from biasshift.errors import ConfigError, DataError
from conftest import FIXTURE_DATA
from answers import typed

RAW = RequestContext(render=lambda p: p.text, seed=0, chat_template=False)
SUBS = "abstract_algebra,anatomy"


def load(root=FIXTURE_DATA, **opts):
    b = MMLU({"subjects": SUBS, **opts})
    assert len(b.files()) == 4  # only the chosen subjects' test and dev files are resolved
    return b, b.load({f.rel: root / f.rel for f in b.files()})


def test_registry_files_and_flags():
    assert benchmarks.get("mmlu") is MMLU
    assert len(SUBJECTS) == 57 and sum(v[2] for v in SUBJECTS.values()) == 14042
    assert len(MMLU.data_files) == 114 and all(f.sha256 and "0ec714eb084217f44cd9ac466d9e988c795302f9" in f.url for f in MMLU.data_files)
    assert MMLU.is_quality_metric and MMLU.outcome == "binary" and not MMLU.higher_is_more_biased
    with pytest.raises(ConfigError, match="shots"):
        MMLU({"shots": 6})
    with pytest.raises(ConfigError, match="unknown nosuch"):
        MMLU({"subjects": "anatomy,nosuch"})


def test_zero_shot_prompt_is_the_standard_format():
    b, items = load()
    assert [it.id for it in items] == ["abstract_algebra/1", "abstract_algebra/2", "abstract_algebra/3", "anatomy/1", "anatomy/2"]
    assert items[1].fields["options"] == ("Yes", "No", "Only for 0", "Only for 1") and items[1].fields["answer"] == "A"
    p = b.prompt(items[3])
    assert p.text == ("The following are multiple choice questions (with answers) about anatomy.\n\n"
                      "Which bone is in the upper arm?\nA. Femur\nB. Tibia\nC. Humerus\nD. Radius\nAnswer:")
    assert p.prefix == "Answer:" and p.messages[0][1] == p.text[: -len("\nAnswer:")]
    req = b.requests(items[3], RAW)[0].request
    assert req.prompt == p.text and req.choices == (" A", " B", " C", " D") and req.policy == "exact"
    _, items_m = load(letters="merged")
    assert MMLU({"subjects": SUBS, "letters": "merged"}).requests(items_m[0], RAW)[0].request.choices == ("A", "B", "C", "D")


def test_five_shot_prompt_uses_the_dev_examples_with_answers():
    b, items = load(shots=5)
    text = b.prompt(items[0]).text
    head = "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    first = "What is the identity of addition in Z?\nA. 0\nB. 1\nC. -1\nD. 2\nAnswer: A\n\n"
    assert text.startswith(head + first)
    assert text.count("\nAnswer:") == 6 and text.count("Answer: ") == 5
    assert text.endswith("Is the trivial group abelian?\nA. No\nB. Only if finite\nC. Only if infinite\nD. Yes\nAnswer: D\n\n"
                         "What is the order of the group Z_4?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")
    b2, items2 = load(shots=2)
    assert b2.prompt(items2[0]).text.count("Answer: ") == 2


def _resp(probs):
    return {"probs": dict(zip((" A", " B", " C", " D"), probs)), "mass_outside": 0.5}


def test_accuracy_by_hand():
    b, items = load()
    # gold: D, A, B (algebra); C, C (anatomy). Predictions: D, B, B ; C, A
    res = {
        "abstract_algebra/1": _resp([0.1, 0.2, 0.3, 0.4]),
        "abstract_algebra/2": _resp([0.3, 0.4, 0.2, 0.1]),
        "abstract_algebra/3": _resp([0.1, 0.6, 0.2, 0.1]),
        "anatomy/1": _resp([0.2, 0.2, 0.5, 0.1]),
        "anatomy/2": _resp([0.7, 0.1, 0.1, 0.1]),
    }
    units = b.units(items, typed(res))
    assert [u["outcome"] for u in units] == [True, False, True, True, False]
    assert units[1]["pred"] == "B" and units[1]["p_answer"] == 0.3
    r = b.compute(units)
    assert r.value == pytest.approx(60.0)  # 3 of 5 pooled
    assert r.metrics["acc_macro"] == pytest.approx((200 / 3 + 50) / 2)
    assert r.per_group["subject"] == {"abstract_algebra": {"acc": pytest.approx(200 / 3), "n": 3}, "anatomy": {"acc": 50.0, "n": 2}}
    assert r.metrics["pred_share_B"] == pytest.approx(40.0) and r.metrics["pred_share_D"] == pytest.approx(20.0)
    assert r.rates["mass_outside_mean"] == 0.5 and r.rates["undefined_rate"] == 0.0
    # the report's McNemar needs one bool per unit; acc is 100 x their mean
    assert all(isinstance(b.unit_outcome(u), bool) for u in units)
    assert r.value == pytest.approx(100 * sum(u["outcome"] for u in units) / len(units))
    units[0]["pred"], units[0]["outcome"] = None, False  # undefined prediction counts as wrong and as undefined
    assert b.compute(units).rates["undefined_rate"] == pytest.approx(0.2)


def test_letter_probabilities_match_the_model(tiny):
    model, tok = tiny
    b, items = load()
    reqs = [r for it in items for r in b.requests(it, RAW)]
    out = {}
    HFEngine(model, tok, batch_size=4).run(reqs, lambda rs: out.update({k.key: r for k, r in rs}))
    units = b.units(items, typed(out))
    letter_ids = [tok(" " + x, add_special_tokens=False)["input_ids"][0] for x in "ABCD"]
    for it, u in zip(items, units):
        ids = [tok.bos_token_id] + tok(b.prompt(it).text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            p = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)[letter_ids]
        assert u["pred"] == "ABCD"[int(p.argmax())]
        assert u["p_answer"] == pytest.approx(float(p["ABCD".index(it.fields["answer"])] / p.sum()), abs=1e-5)
        assert u["mass_outside"] == pytest.approx(1 - float(p.sum()), abs=1e-5)


def test_data_errors(tmp_path):
    shutil.copytree(FIXTURE_DATA / "mmlu", tmp_path / "mmlu")
    path = tmp_path / "mmlu" / "test" / "anatomy_test.csv"
    path.write_text("Q1,a,b,c,d,A\nQ2,a,b,c,d\n")
    with pytest.raises(DataError, match=r"expected 6 fields.*anatomy_test.csv, row 2"):
        load(tmp_path)
    path.write_text("Q1,a,b,c,d,A\nQ2,a,b,c,d,E\n")
    with pytest.raises(DataError, match=r"answer must be one of.*row 2, field 'answer'"):
        load(tmp_path)
    path.write_text(" ,a,b,c,d,A\n")
    with pytest.raises(DataError, match=r"row 1, field 'question'"):
        load(tmp_path)
    path.write_text("Q1,,b,c,d,A\n")  # an empty option is kept and counted, not refused
    b, items = load(tmp_path)
    assert items[-1].fields["options"][0] == "" and b.quirks == {"empty_option_cells": 1}
    (tmp_path / "mmlu" / "dev" / "anatomy_dev.csv").write_text("Q,a,b,c,d,A\n")
    with pytest.raises(DataError, match=r"5-shot needs 5 dev examples.*anatomy_dev.csv"):
        load(tmp_path, shots=5)


def _units(correct):
    return [{"unit": f"anatomy/{i}", "subject": "anatomy" if i % 2 else "virology", "answer": "A",
             "pred": "A" if c else "B", "p_answer": 0.5, "mass_outside": 0.1, "outcome": bool(c)} for i, c in enumerate(correct)]


def test_report_uses_mcnemar_and_marks_quality(tmp_path):
    from biasshift.report import build_report
    from report_helpers import write_run

    base = [True] * 10 + [False] * 10
    var = [False] + [True] * 9 + [True] * 8 + [False] * 2  # b = 1 (correct -> wrong), c = 8 (wrong -> correct)
    run = write_run(tmp_path / "run", {"base": {"mmlu": _units(base)}, "int8": {"mmlu": _units(var)}})
    rep = build_report([run], n_boot=200, n_perm=200, samples=0)
    row = next(r for r in rep.rows if r.benchmark == "mmlu" and r.primary)
    assert row.quality and row.test == "McNemar exact" and (row.mcnemar_b, row.mcnemar_c) == (1, 8)
    assert row.base == pytest.approx(50.0) and row.value == pytest.approx(85.0)
    assert row.p_value == pytest.approx(2 * (1 + 9) / 2 ** 9)  # exact two-sided: 2 P(X <= 1), X ~ Bin(9, 1/2)
    assert any(r.benchmark == "mmlu" and r.section == "subject" for r in rep.per_group)
