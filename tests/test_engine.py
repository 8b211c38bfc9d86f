"""Engine correctness: independent recomputation, batched == one-by-one, seeded sampling, BOS, choices."""

from __future__ import annotations

import pytest
import torch

from biasshift.engine.requests import answer_to_dict
from biasshift.engine.hf import HFEngine
from biasshift.engine.requests import ChoiceRequest, GenerateRequest, Keyed, LoglikRequest
from biasshift.errors import ConfigError

SENTENCES = [
    "The man went to the market.",
    "Yes or no?",
    "She is a great engineer and a kind person who went to the market with the doctor.",
    "x",
    "Poor people are lazy.",
    "He couldn't figure out the issue with the rope.",
    "Asian, Hispanic, Native American.",
]
PROMPTS = [
    'Please answer the above question with either "yes" or "no".\n\nMy answer would be "',
    "Answer: ",
    "The doctor said yes, the nurse said",
    'Is this good? "',
    "If had to select one of the options, my answer would be (A) Very good (B) Bad\n\nAnswer (",
]


def run(engine, reqs):
    out = {}
    engine.run(reqs, lambda rs: out.update({k.key: answer_to_dict(r) for k, r in rs}))  # JSON form, as stored
    return out


def test_loglik_matches_independent_forward(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok, batch_size=4)
    res = run(eng, [Keyed(f"s{i}", f"s{i}", LoglikRequest("", s)) for i, s in enumerate(SENTENCES)])
    for i, s in enumerate(SENTENCES):
        ids = tok(s)["input_ids"]  # this tokenizer adds BOS by default
        assert ids[0] == tok.bos_token_id
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        lp = torch.log_softmax(logits[:-1].float(), -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        assert res[f"s{i}"]["n_tokens"] == len(ids) - 1
        assert res[f"s{i}"]["sum"] == pytest.approx(float(lp.sum()), abs=1e-4)
        assert res[f"s{i}"]["mean"] == pytest.approx(float(lp.mean()), abs=1e-5)


def test_loglik_with_context_scores_only_the_continuation(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok, batch_size=2)
    res = run(eng, [Keyed("a", "a", LoglikRequest("The man went", " to the market."))])
    ctx = tok("The man went")["input_ids"]
    full = tok("The man went to the market.")["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    expected = sum(float(lp[p - 1, full[p]]) for p in range(len(ctx), len(full)))
    assert res["a"]["n_tokens"] == len(full) - len(ctx)
    assert res["a"]["sum"] == pytest.approx(expected, abs=1e-4)


def _mixed_requests():
    reqs = [Keyed(f"l{i}", f"l{i}", LoglikRequest("", s)) for i, s in enumerate(SENTENCES)]
    reqs += [Keyed(f"c{i}", f"c{i}", ChoiceRequest(p, ("yes", "no"))) for i, p in enumerate(PROMPTS)]
    reqs += [Keyed(f"a{i}", f"a{i}", ChoiceRequest(p, ("A", "B"), policy="space")) for i, p in enumerate(PROMPTS)]
    reqs += [Keyed(f"g{i}", f"g{i}", GenerateRequest(p, 12)) for i, p in enumerate(PROMPTS)]
    reqs += [
        Keyed(f"s{i}", f"s{i}", GenerateRequest(p, 10, do_sample=True, temperature=1.0, top_p=0.9, n=3, seed=7))
        for i, p in enumerate(PROMPTS)
    ]
    return reqs


def test_batched_equals_one_by_one(tiny):
    model, tok = tiny
    reqs = _mixed_requests()
    one = run(HFEngine(model, tok, batch_size=1), reqs)
    many = run(HFEngine(model, tok, batch_size=8), reqs)
    assert one.keys() == many.keys() == {r.key for r in reqs}
    for k in one:
        a, b = one[k], many[k]
        if k.startswith("l"):
            assert a["n_tokens"] == b["n_tokens"]
            assert a["sum"] == pytest.approx(b["sum"], abs=1e-4)
        elif k[0] in "ca":
            for lab in a["probs"]:
                assert a["probs"][lab] == pytest.approx(b["probs"][lab], abs=1e-4)
                assert a["raw"][lab] == pytest.approx(b["raw"][lab], abs=1e-4)
            assert a["mass_outside"] == pytest.approx(b["mass_outside"], abs=1e-4)
        else:
            assert [s["text"] for s in a["samples"]] == [s["text"] for s in b["samples"]]
            assert [s["n_tokens"] for s in a["samples"]] == [s["n_tokens"] for s in b["samples"]]


def test_greedy_generation_matches_manual_argmax_loop(tiny):
    model, tok = tiny
    prompt = PROMPTS[2]
    res = run(HFEngine(model, tok, batch_size=1), [Keyed("g", "g", GenerateRequest(prompt, 6))])
    ids = tok(prompt)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(6):
            t = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if t == tok.eos_token_id:
                break
            new.append(t)
    assert res["g"]["samples"][0]["text"] == tok.decode(new, skip_special_tokens=True).strip()
    assert res["g"]["samples"][0]["n_tokens"] == len(new)


def test_sampling_is_seeded_per_item_and_sample(tiny):
    model, tok = tiny
    mk = lambda seed, key: Keyed(key, key, GenerateRequest(PROMPTS[0], 12, do_sample=True, n=4, seed=seed))
    a = run(HFEngine(model, tok, batch_size=3), [mk(1, "x"), mk(1, "y")])
    b = run(HFEngine(model, tok, batch_size=1), [mk(1, "x")])
    c = run(HFEngine(model, tok, batch_size=1), [mk(2, "x")])
    texts = lambda r: [s["text"] for s in r["samples"]]
    assert texts(a["x"]) == texts(b["x"])  # same stream whatever the batch
    assert len(set(texts(a["x"]))) > 1  # samples within an item differ
    assert texts(a["x"]) != texts(a["y"])  # items get their own streams
    assert texts(a["x"]) != texts(c["x"])  # the seed matters


def test_bos_is_prepended_once(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    assert eng.prepend_bos  # the tiny tokenizer adds BOS by default -> auto prepends it
    assert eng.encode("hello")[0] == tok.bos_token_id
    twice = eng.encode("<s>assistant\nhi")
    assert twice[0] == tok.bos_token_id and twice[1] != tok.bos_token_id
    never = HFEngine(model, tok, bos_policy="never")
    assert never.encode("hello") == tok("hello", add_special_tokens=False)["input_ids"]
    # with no BOS in the context, log-likelihood still conditions on an explicit anchor token
    r = run(never, [Keyed("a", "a", LoglikRequest("", "hello"))])
    assert r["a"]["anchor"] == tok.bos_token_id


def test_choice_variants_and_probabilities(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    exact = eng.choice_variants(("yes", "no"), "exact")
    merged = eng.choice_variants(("yes", "no"), "case_space")
    for e, m in zip(exact, merged):
        assert set(e) <= set(m)
    assert tok.convert_tokens_to_ids("Ġyes") in merged[0]  # the leading-space form is merged
    r = run(eng, [Keyed("c", "c", ChoiceRequest(PROMPTS[0], ("yes", "no")))])["c"]
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor([tok(PROMPTS[0])["input_ids"]])).logits[0, -1].float(), -1)
    assert r["raw"]["yes"] == pytest.approx(float(p[merged[0]].sum()), abs=1e-6)
    assert r["probs"]["yes"] + r["probs"]["no"] == pytest.approx(1.0)
    assert r["mass_outside"] == pytest.approx(1 - r["raw"]["yes"] - r["raw"]["no"], abs=1e-9)
    assert {t[1] for t in r["tokens"]["yes"]} == set(merged[0])


def test_choice_label_that_is_not_a_token_is_an_error(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="not a single token"):
        HFEngine(model, tok).choice_variants(("yes", "qqzzxxyy"), "exact")


def test_resume_batches_have_the_same_composition(tiny):
    model, tok = tiny
    reqs = [Keyed(f"l{i}", f"l{i}", LoglikRequest("", s)) for i, s in enumerate(SENTENCES)]
    eng = HFEngine(model, tok, batch_size=3)
    full = run(eng, reqs)
    batches = eng._batches(reqs, [len(eng.encode(r.request.continuation)) for r in reqs], set())
    first = {reqs[i].key for i in batches[0]}
    part = {}
    HFEngine(model, tok, batch_size=3).run(reqs, lambda rs: part.update({k.key: answer_to_dict(r) for k, r in rs}), done=first)
    assert set(part) == set(full) - first
    for k in part:
        assert part[k] == full[k]  # bit-identical: same batch composition
