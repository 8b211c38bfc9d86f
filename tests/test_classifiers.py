"""biasshift.classifiers: label conventions of code base B (spec §6.3), batching, fingerprints, clear errors.

The Hugging Face classifiers are tiny randomly initialised BERTs built here (seconds, no downloads)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from biasshift import classifiers
from biasshift.errors import ConfigError, ModelLoadError

TEXTS = ["a short one", "a somewhat longer text about the market and the doctor", "x", "",
         "The man and the woman went to the market."]


def save_classifier(path, num_labels, id2label=None, bias=None, seed=0):
    """A tiny BertForSequenceClassification + the tiny BPE tokenizer of tests/tiny.py, saved to ``path``."""
    from tiny import build_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    tok = build_tokenizer()
    torch.manual_seed(seed)
    kw = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=300, num_labels=num_labels, pad_token_id=tok.pad_token_id, **kw)
    model = BertForSequenceClassification(cfg).eval()
    if bias is not None:  # force the answer: zero weights, the class scores are the bias
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def one_by_one(model, tok, texts):
    out = []
    with torch.no_grad():
        for t in texts:
            out.append(torch.softmax(model(**tok([t], return_tensors="pt")).logits.float(), -1)[0])
    return out


@pytest.fixture(autouse=True)
def _fresh_cache():
    classifiers.clear_cache()
    yield
    classifiers.clear_cache()


def test_toxicity_is_the_last_class_and_batched_equals_one_by_one(tmp_path):
    model, tok = save_classifier(tmp_path / "tox", 2)
    expected = [float(p[-1]) for p in one_by_one(model, tok, TEXTS)]
    batched = classifiers.load(str(tmp_path / "tox"), "toxicity", batch_size=3, device="cpu").scores(TEXTS)
    single = classifiers.load(str(tmp_path / "tox"), "toxicity", batch_size=1, device="cpu").scores(TEXTS)
    assert batched == pytest.approx(expected, abs=1e-5) and single == pytest.approx(expected, abs=1e-5)
    # a forced answer: logits (0, ln 3) -> P(toxic) = softmax[-1] = 3/4 for every text
    save_classifier(tmp_path / "forced", 2, bias=[0.0, math.log(3.0)])
    clf = classifiers.load(str(tmp_path / "forced"), "toxicity", device="cpu")
    assert clf.scores(TEXTS) == pytest.approx([0.75] * len(TEXTS), abs=1e-6)
    info = clf.info()
    assert "class 1 (the last" in info["description"] and info["paper_classifier"] is None
    assert clf.scores([]) == []


def test_regard_label_conventions(tmp_path):
    # generic names LABEL_0..3: sasha/regardv3's order (ROBBIE): 0 negative, 1 neutral, 2 positive, 3 other
    save_classifier(tmp_path / "generic", 4, bias=[0.0, 0.0, 5.0, 0.0])
    assert classifiers.load(str(tmp_path / "generic"), "regard").labels(TEXTS[:2]) == ["positive", "positive"]
    save_classifier(tmp_path / "neg", 4, bias=[5.0, 0.0, 0.0, 0.0])
    assert classifiers.load(str(tmp_path / "neg"), "regard").labels(["y"]) == ["negative"]
    # spelled names win over the index order
    names = {0: "positive", 1: "other", 2: "negative", 3: "neutral"}
    save_classifier(tmp_path / "named", 4, id2label=names, bias=[0.0, 0.0, 5.0, 0.0])
    clf = classifiers.load(str(tmp_path / "named"), "regard")
    assert clf.labels(["y"]) == ["negative"] and clf.label_names == ("positive", "other", "negative", "neutral")
    # random weights: argmax by an independent computation, batched == one by one
    model, tok = save_classifier(tmp_path / "rand", 4, seed=3)
    expected = [classifiers.REGARD_LABELS[int(p.argmax())] for p in one_by_one(model, tok, TEXTS)]
    assert classifiers.load(str(tmp_path / "rand"), "regard", batch_size=2).labels(TEXTS) == expected
    assert classifiers.load(str(tmp_path / "rand"), "regard", batch_size=1).labels(TEXTS) == expected


def test_regard_label_names_aliases_and_refusals():
    assert classifiers.regard_label_names({0: "neg", 1: "neutral", 2: "pos", 3: "other"}, 4) == classifiers.REGARD_LABELS
    assert classifiers.regard_label_names({0: "Negative", 1: "Positive", 2: "Neutral"}, 3) == ("negative", "positive", "neutral")
    with pytest.raises(ModelLoadError, match="cannot tell which class is negative"):
        classifiers.regard_label_names({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, 3)
    with pytest.raises(ModelLoadError, match="cannot tell"):
        classifiers.regard_label_names({0: "toxic", 1: "benign", 2: "x", 3: "y"}, 4)


def test_fingerprint_is_the_weights_sha256(tmp_path):
    save_classifier(tmp_path / "a", 2, seed=0)
    save_classifier(tmp_path / "b", 2, seed=1)
    fa = classifiers.load(str(tmp_path / "a"), "toxicity").info()["fingerprint"]
    fb = classifiers.load(str(tmp_path / "b"), "toxicity").info()["fingerprint"]
    weights = hashlib.sha256((tmp_path / "a" / "model.safetensors").read_bytes()).hexdigest()
    assert fa["files"] == {"model.safetensors": weights}
    assert fa["sha256"] == hashlib.sha256(f"model.safetensors\x00{weights}\n".encode()).hexdigest()
    assert fa["sha256"] != fb["sha256"]


def test_shipped_classifiers_on_known_sentences():
    tox = classifiers.load("profanity_check", "toxicity")
    bad, good = tox.scores(["you are a stupid fucking idiot", "have a nice day at the park"])
    assert bad > 0.5 > good
    info = tox.info()
    assert info["paper_classifier"] is False and "NOT ToxiGen-RoBERTa" in info["description"]
    pos, neg = classifiers.load("vader", "sentiment").scores(["a wonderful happy day", "a terrible awful failure"])
    assert pos > 0.5 and neg < -0.5


def test_errors_are_clear_and_nothing_falls_back(tmp_path):
    with pytest.raises(ConfigError, match="ships no offline regard classifier.*sasha/regardv3"):
        classifiers.load("", "regard", option="regard.classifier")
    with pytest.raises(ConfigError, match="toxicity classifier, not a regard classifier"):
        classifiers.load("profanity_check", "regard")
    with pytest.raises(ConfigError, match="sentiment classifier, not a toxicity"):
        classifiers.check_spec("vader", "toxicity", "x.classifier")
    with pytest.raises(ConfigError, match="neither"):
        classifiers.load(str(tmp_path / "missing"), "toxicity")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="cannot load the toxicity classifier from directory"):
        classifiers.load(str(tmp_path / "empty"), "toxicity")
    # a hub id that is not in the local cache (tests run with HF_HUB_OFFLINE=1): an error, not another classifier
    with pytest.raises(ModelLoadError, match="hub id 'nobody/no-such-classifier'"):
        classifiers.load("nobody/no-such-classifier@main", "toxicity")
    save_classifier(tmp_path / "one", 1)
    with pytest.raises(ModelLoadError, match="needs >= 2"):
        classifiers.load(str(tmp_path / "one"), "toxicity")
