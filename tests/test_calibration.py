"""Tests for biasshift.calibration (local sources; the C4 download is monkeypatched)."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import warnings

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import biasshift.calibration as calibration
from biasshift.calibration import CalibrationDataError, load_calibration_ids, read_documents

VOCAB_WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over w0..w59 whose post-processor adds a BOS token."""
    vocab = {"[UNK]": 0, "[BOS]": 1, **{w: i + 2 for i, w in enumerate(VOCAB_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]")


def make_docs(n: int, lo: int, hi: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB_WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def is_window_of(row: list[int], seq: list[int]) -> bool:
    n = len(row)
    return any(seq[i : i + n] == row for i in range(len(seq) - n + 1))


def write_txt(path, docs):
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d, "url": "x"}) + "\n" for d in docs), encoding="utf-8")
    return path


def test_txt_source_shape_windows_and_metadata(tmp_path, tokenizer):
    docs = make_docs(20, 5, 40)
    path = write_txt(tmp_path / "corpus.txt", docs)
    ids, meta = load_calibration_ids(tokenizer, str(path), nsamples=6, seqlen=16, seed=0)
    assert ids.shape == (6, 16) and ids.dtype == torch.long
    assert meta["n_documents"] == 20
    assert meta["sampling"] == "documents" and meta["fallback_concatenated"] is False
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (meta["nsamples"], meta["seqlen"], meta["seed"]) == (6, 16, 0)
    assert meta["add_special_tokens"] is False
    assert not (ids == 1).any(), "BOS must not be added"
    # every row is a contiguous window of one document that is longer than seqlen tokens
    long_docs = [encode(tokenizer, d) for d in docs if len(encode(tokenizer, d)) > 16]
    for row in ids.tolist():
        assert any(is_window_of(row, d) for d in long_docs)


def test_draws_follow_the_reference_procedure(tmp_path, tokenizer):
    """Same windows as a naive re-implementation of the reference sampling loop."""
    docs = make_docs(25, 3, 30, seed=9)  # mostly short documents: many rejected draws
    path = write_txt(tmp_path / "corpus.txt", docs)
    ids, _ = load_calibration_ids(tokenizer, path, nsamples=10, seqlen=20, seed=11)
    rng = random.Random(11)
    expected = []
    for _ in range(10):
        while True:
            toks = encode(tokenizer, docs[rng.randint(0, len(docs) - 1)])
            if len(toks) > 20:
                break
        start = rng.randint(0, len(toks) - 20 - 1)
        expected.append(toks[start : start + 20])
    assert ids.tolist() == expected


def test_txt_blank_line_splitting(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("w1 w2\nw3\n\n  \n\nw4 w5\r\n\r\nw6\n\n\n", encoding="utf-8")
    assert read_documents(path) == ["w1 w2\nw3", "w4 w5", "w6"]


def test_jsonl_and_json_gz_sources(tmp_path, tokenizer):
    docs = make_docs(15, 5, 40, seed=2)
    jl = write_jsonl(tmp_path / "c.jsonl", docs)
    gz = tmp_path / "c4-like.json.gz"
    gz.write_bytes(gzip.compress(jl.read_bytes()))
    ids_jl, meta_jl = load_calibration_ids(tokenizer, jl, nsamples=4, seqlen=12, seed=3)
    ids_gz, meta_gz = load_calibration_ids(tokenizer, str(gz), nsamples=4, seqlen=12, seed=3)
    assert ids_jl.shape == (4, 12)
    assert torch.equal(ids_jl, ids_gz)
    assert meta_jl["n_documents"] == meta_gz["n_documents"] == 15
    assert meta_gz["sha256"] == hashlib.sha256(gz.read_bytes()).hexdigest()


def test_seed_determinism(tmp_path, tokenizer):
    path = write_txt(tmp_path / "corpus.txt", make_docs(30, 5, 60))
    a, _ = load_calibration_ids(tokenizer, path, nsamples=8, seqlen=16, seed=7)
    b, _ = load_calibration_ids(tokenizer, path, nsamples=8, seqlen=16, seed=7)
    c, _ = load_calibration_ids(tokenizer, path, nsamples=8, seqlen=16, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_concatenation_fallback_is_flagged(tmp_path, tokenizer):
    docs = make_docs(10, 3, 8, seed=4)  # every document <= 8 tokens < seqlen
    path = write_txt(tmp_path / "short.txt", docs)
    with pytest.warns(UserWarning, match="concatenation"):
        ids, meta = load_calibration_ids(tokenizer, path, nsamples=5, seqlen=20, seed=0)
    assert ids.shape == (5, 20)
    assert meta["fallback_concatenated"] is True and meta["sampling"] == "concatenated"
    stream = encode(tokenizer, "\n\n".join(docs))
    assert meta["stream_tokens"] == len(stream)
    for row in ids.tolist():
        assert is_window_of(row, stream)
    with pytest.warns(UserWarning):
        again, _ = load_calibration_ids(tokenizer, path, nsamples=5, seqlen=20, seed=0)
    assert torch.equal(ids, again)


def test_too_short_corpus_raises(tmp_path, tokenizer):
    path = write_txt(tmp_path / "tiny.txt", ["w1 w2 w3", "w4 w5"])  # 5 tokens in all
    with pytest.raises(CalibrationDataError, match="too short"):
        load_calibration_ids(tokenizer, path, nsamples=2, seqlen=5, seed=0)


def test_malformed_jsonl_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "w1 w2"}\n\n{"text": "w3"\n', encoding="utf-8")
    with pytest.raises(CalibrationDataError, match=r"bad\.jsonl: line 3: invalid JSON"):
        load_calibration_ids(tokenizer, path, nsamples=1, seqlen=2)
    path.write_text('{"text": "w1 w2"}\n{"content": "w3"}\n', encoding="utf-8")
    with pytest.raises(CalibrationDataError, match=r"bad\.jsonl: line 2: .*\"text\""):
        read_documents(path)
    path.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(CalibrationDataError, match="line 1"):
        read_documents(path)


def test_missing_empty_and_unsupported_files(tmp_path, tokenizer):
    with pytest.raises(CalibrationDataError, match="neither 'c4' nor an existing file"):
        load_calibration_ids(tokenizer, tmp_path / "nope.txt", nsamples=1, seqlen=2)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(CalibrationDataError, match="no documents"):
        load_calibration_ids(tokenizer, empty, nsamples=1, seqlen=2)
    other = tmp_path / "data.csv"
    other.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(CalibrationDataError, match="unsupported"):
        read_documents(other)
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(CalibrationDataError, match="broken.json.gz"):
        read_documents(broken)


def test_invalid_arguments(tmp_path, tokenizer):
    path = write_txt(tmp_path / "c.txt", make_docs(5, 20, 30))
    with pytest.raises(ValueError, match="nsamples"):
        load_calibration_ids(tokenizer, path, nsamples=0, seqlen=4)
    with pytest.raises(ValueError, match="seqlen"):
        load_calibration_ids(tokenizer, path, nsamples=1, seqlen=-1)


def test_c4_offline_raises_clear_error(monkeypatch, tokenizer):
    calls = []

    def offline(**kwargs):
        calls.append(kwargs)
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(calibration, "hf_hub_download", offline)
    with pytest.raises(CalibrationDataError, match="local text file") as info:
        load_calibration_ids(tokenizer, "c4", nsamples=1, seqlen=4)
    assert "allenai/c4" in str(info.value) and "offline mode is enabled" in str(info.value)
    assert calls[0]["repo_id"] == "allenai/c4"
    assert calls[0]["repo_type"] == "dataset"
    assert calls[0]["filename"] == "en/c4-train.00000-of-01024.json.gz"


def test_c4_source_reads_downloaded_shard(monkeypatch, tmp_path, tokenizer):
    shard = tmp_path / "c4-train.00000-of-01024.json.gz"
    docs = make_docs(12, 10, 50, seed=5)
    shard.write_bytes(gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in docs).encode()))
    seen = {}

    def fake_download(**kwargs):
        seen.update(kwargs)
        return str(shard)

    monkeypatch.setattr(calibration, "hf_hub_download", fake_download)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # long documents exist: no fallback warning
        ids, meta = load_calibration_ids(tokenizer, "c4", nsamples=3, seqlen=8, seed=0, cache_dir=tmp_path / "hf")
    assert ids.shape == (3, 8)
    assert seen["cache_dir"] == tmp_path / "hf"
    assert meta["source"] == "c4" and meta["hf_repo_id"] == "allenai/c4"
    assert meta["n_documents"] == 12 and meta["fallback_concatenated"] is False
    assert meta["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
