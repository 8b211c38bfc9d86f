"""The vLLM engine (biasshift.engine.vllm) and --engine auto (biasshift.engine.auto).

Two parts:
- fast: the server's life cycle and the answer assembly against a stand-in server (a stdlib HTTP server run
  as ``python -m vllm.entrypoints.openai.api_server`` from a fake ``vllm`` package on PYTHONPATH, with known
  log-probabilities), plus the auto engine's dispatch. No vLLM needed; seconds.
- slow: the real vLLM server (``make vllm-env``) on the real SmolLM2-135M-Instruct, float32 in both engines,
  against the HF engine on the same directory: identical greedy texts on DecodingTrust and WorldBench prompts,
  log-likelihoods and choice probabilities within 1e-3. One server for the module (start-up ~60 s on 2 cores).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from biasshift.engine import tokens as T
from biasshift.engine.base import EngineSettings
from biasshift.engine.requests import (ChoiceRequest, GenerateAnswer, GenerateRequest, Keyed, LoglikIdsRequest,
                                       LoglikRequest)
from biasshift.engine.vllm import VLLMEngine, VLLMServer, group_members, vllm_python
from biasshift.errors import ConfigError, ModelLoadError
from conftest import REAL_DATA, REPO

FAKE_SERVER = r'''
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
opt = lambda k: args[args.index(k) + 1]
mode = os.environ.get("FAKE_VLLM_MODE", "ok")
if os.environ.get("FAKE_VLLM_PIDFILE"):
    open(os.environ["FAKE_VLLM_PIDFILE"], "w").write(str(os.getpid()))
print("fake vllm", " ".join(args), flush=True)
if mode == "exit":
    print("RuntimeError: no model here", flush=True)
    sys.exit(3)
# an "engine core" child in the same process group, as vLLM has
child_code = "import signal, time\n" + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if mode == "stubborn" else "") + "time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", child_code])

def on_term(*_):
    if mode != "stubborn":
        child.terminate()
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)
if mode == "hang":
    time.sleep(600)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self._send({})
        if self.path == "/v1/models":
            return self._send({"data": [{"id": opt("--served-model-name"), "root": opt("--model")}]})
        if self.path == "/version":
            return self._send({"version": "fake"})
        self._send({"error": "no"}, 404)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        p = req["prompt"]
        if len(p) > 64:
            return self._send({"error": {"message": "This model's maximum context length is 64 tokens."}}, 400)
        c = {"index": 0, "finish_reason": "length"}
        if req.get("prompt_logprobs") is not None:  # known values: logprob -(t % 7 + 1) / 10, rank 1 for even ids
            c["prompt_logprobs"] = [None] + [{str(t): {"logprob": -(t % 7 + 1) / 10, "rank": 1 if t % 2 == 0 else 2}}
                                             for t in p[1:]]
            c["token_ids"] = [5]
        elif req.get("logprob_token_ids"):  # known values: logprob -t / 100; the "argmax" is id 5
            c["logprobs"] = {"top_logprobs": [{f"token_id:{t}": -t / 100 for t in [5] + req["logprob_token_ids"]}]}
            c["token_ids"] = [5]
        else:  # generation: max_tokens - 1 copies of token 3 + seed % 40, then the first stop id
            t = 3 + (req.get("seed") or 0) % 40
            c["token_ids"] = [t] * (req["max_tokens"] - 1) + [req["stop_token_ids"][0]]
            c["finish_reason"] = "stop"
        self._send({"choices": [c]})

ThreadingHTTPServer(("127.0.0.1", int(opt("--port"))), H).serve_forever()
'''


@pytest.fixture()
def fake_vllm(tmp_path, monkeypatch):
    """PYTHONPATH with a stand-in ``vllm.entrypoints.openai.api_server``; returns a settings factory."""
    pkg = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_SERVER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    monkeypatch.setenv("FAKE_VLLM_PIDFILE", str(tmp_path / "pid"))
    return tmp_path


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    from tiny import save_tiny
    from transformers import AutoTokenizer

    d = save_tiny(tmp_path_factory.mktemp("tinyv") / "m")
    return d, AutoTokenizer.from_pretrained(d)


def _start(tmp_path: Path, tok_dir: Path, tok, **kw) -> VLLMEngine:
    settings = EngineSettings(batch_size=kw.pop("batch_size", 4), log_dir=str(tmp_path / "logs"))
    return VLLMEngine.start("tiny", str(tok_dir), tok, settings, ["--dtype", "float32"], python=Path(sys.executable), **kw)


def _wait_gone(pgid: int, seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(0.2)
    return group_members(pgid)


# ---------------------------------------------------------------------------------------------- life cycle
def test_server_runs_in_its_own_group_logs_and_close_stops_it(fake_vllm, tiny_tok):
    d, tok = tiny_tok
    eng = _start(fake_vllm, d, tok)
    pgid = eng.server.proc.pid
    assert len(group_members(pgid)) == 2  # the server and its "engine core"
    assert os.getpgid(pgid) == pgid != os.getpgrp()
    log = (fake_vllm / "logs" / "vllm-tiny.log").read_text()
    assert "vllm.entrypoints.openai.api_server --model" in log and f"--port {eng.server.port}" in log
    assert eng.variant_info["engine"]["name"] == "vllm"
    assert eng.describe()["server"]["vllm_version"] == "fake"
    eng.close()
    assert group_members(pgid) == []


def test_interrupt_during_run_stops_the_server(fake_vllm, tiny_tok):
    d, tok = tiny_tok
    eng = _start(fake_vllm, d, tok, batch_size=1)
    pgid = eng.server.proc.pid
    seen = []

    def on_batch(rs):
        seen.extend(rs)
        raise KeyboardInterrupt

    items = [Keyed(f"k{i}", f"k{i}", GenerateRequest("Yes or no", 3)) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        eng.run(items, on_batch)
    assert len(seen) == 1
    assert group_members(pgid) == []
    with pytest.raises(RuntimeError, match="closed"):
        eng.run(items, lambda rs: None)


def test_children_that_ignore_sigterm_are_killed(fake_vllm, tiny_tok, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "stubborn")
    d, tok = tiny_tok
    eng = _start(fake_vllm, d, tok)
    pgid = eng.server.proc.pid
    eng.server.stop(grace=1.0)
    assert group_members(pgid) == []


def test_startup_timeout_and_early_exit_are_clear_errors(fake_vllm, tiny_tok, monkeypatch):
    d, tok = tiny_tok
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    monkeypatch.setenv("BIASSHIFT_VLLM_STARTUP_TIMEOUT", "3")
    with pytest.raises(ModelLoadError, match=r"did not answer within 3 s.*vllm-tiny\.log"):
        _start(fake_vllm, d, tok)
    assert group_members(int((fake_vllm / "pid").read_text())) == []
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    with pytest.raises(ModelLoadError, match=r"exited during start-up \(exit code 3\)(.|\n)*no model here"):
        _start(fake_vllm, d, tok)


def test_server_dies_with_a_killed_parent(fake_vllm, tiny_tok):
    """SIGKILL of the biasshift process (no close, no atexit): the server still goes (PR_SET_PDEATHSIG)."""
    d, _ = tiny_tok
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from pathlib import Path
        from transformers import AutoTokenizer
        from biasshift.engine.base import EngineSettings
        from biasshift.engine.vllm import VLLMEngine
        tok = AutoTokenizer.from_pretrained({str(d)!r})
        eng = VLLMEngine.start("tiny", {str(d)!r}, tok, EngineSettings(log_dir={str(fake_vllm)!r}), [],
                               python=Path(sys.executable))
        print(eng.server.proc.pid, flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(p.stdout.readline())
        assert group_members(pgid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert _wait_gone(pgid) == []
    finally:
        p.kill()


def test_engine_url_uses_a_running_server_and_leaves_it_running(fake_vllm, tiny_tok):
    d, tok = tiny_tok
    server = VLLMServer(Path(sys.executable), str(d), "external", [], log_path=fake_vllm / "ext.log")
    server.start()
    try:
        eng = VLLMEngine.connect(server.url, tok, settings=EngineSettings(), expect_path=str(d))
        assert eng.served_name == "external" and eng.describe()["server"]["managed"] is False
        eng.close()
        assert server.alive()
        with pytest.raises(ConfigError, match="serves .* not this variant's weights"):
            VLLMEngine.connect(server.url, tok, settings=EngineSettings(), expect_path=str(fake_vllm))
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="no vLLM server answers"):
        VLLMEngine.connect(server.url, tok, settings=EngineSettings())


def test_vllm_python_env_var_must_name_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("BIASSHIFT_VLLM_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="BIASSHIFT_VLLM_PYTHON"):
        vllm_python()
    monkeypatch.setenv("BIASSHIFT_VLLM_PYTHON", sys.executable)
    assert vllm_python() == Path(sys.executable)


# ---------------------------------------------------------------------------------------------- answers
def test_answers_from_known_log_probabilities(fake_vllm, tiny_tok):
    """The stand-in server's log-probabilities are known functions of the token id: the answers computed
    by hand from them must come back."""
    d, tok = tiny_tok
    eng = _start(fake_vllm, d, tok)
    items = [Keyed("ll", "ll", LoglikRequest("The man", " and the woman")),
             Keyed("l0", "l0", LoglikRequest("", "Yes or no")),
             Keyed("ids", "ids", LoglikIdsRequest((1, 10, 12, 14))),
             Keyed("ch", "ch", ChoiceRequest("Please answer yes or no:", ("yes", "no"))),
             Keyed("g", "g", GenerateRequest("Yes or no", 4, do_sample=True, n=2, seed=7)),
             Keyed("gg", "gg", GenerateRequest("Yes or no", 3))]
    got = {}
    try:
        eng.run(items, lambda rs: got.update({k.key: a for k, a in rs}), done={"gg"})
    finally:
        eng.close()
    assert set(got) == {"ll", "l0", "ids", "ch", "g"}  # "gg" was done already
    lp = lambda t: -(t % 7 + 1) / 10
    ctx, cont = T.encode_loglik(tok, items[0].request, False, [tok.eos_token_id])
    a = got["ll"]
    assert a.sum == pytest.approx(sum(lp(t) for t in cont)) and a.n_tokens == len(cont) and a.anchor is None
    assert a.greedy == all(t % 2 == 0 for t in cont) and a.engine == "vllm"
    cont0 = tok("Yes or no", add_special_tokens=False)["input_ids"]
    assert got["l0"].anchor == tok.bos_token_id and got["l0"].mean == pytest.approx(sum(map(lp, cont0)) / len(cont0))
    assert got["ids"].sum == pytest.approx(lp(10) + lp(12) + lp(14)) and got["ids"].greedy is True
    ch = got["ch"]
    variants = T.choice_variants(tok, ("yes", "no"), "case_space")
    raw = {lab: sum(math.exp(-t / 100) for t in ids_) for lab, ids_ in zip(("yes", "no"), variants)}
    assert ch.raw == pytest.approx(raw)
    assert ch.probs["yes"] == pytest.approx(raw["yes"] / (raw["yes"] + raw["no"]))
    assert ch.mass_outside == pytest.approx(max(0.0, 1 - sum(raw.values())))
    assert ch.top_token == tok.convert_ids_to_tokens(5) and ch.engine == "vllm"
    assert [x[1] for x in ch.tokens["no"]] == variants[1]
    g = got["g"]
    assert isinstance(g, GenerateAnswer) and g.engine == "vllm" and len(g.samples) == 2
    for s, sample in enumerate(g.samples):  # each sample its own seed: row_seed(seed, key, s)
        t = 3 + T.row_seed(7, "g", s) % 40
        assert sample.text == tok.decode([t] * 3, skip_special_tokens=True).strip()
        assert sample.n_tokens == 3 and sample.finish == "eos"


def test_a_prompt_longer_than_the_server_allows_is_a_clear_error_and_stops_it(fake_vllm, tiny_tok):
    d, tok = tiny_tok
    eng = _start(fake_vllm, d, tok)
    pgid = eng.server.proc.pid
    with pytest.raises(ConfigError, match="longer than the vLLM server's max_model_len.*BIASSHIFT_VLLM_ARGS"):
        eng.run([Keyed("long", "long", GenerateRequest("yes no " * 60, 2))], lambda rs: None)
    assert group_members(pgid) == []


# ---------------------------------------------------------------------------------------------- auto
class _FakeEngine:
    def __init__(self, name):
        from biasshift.engine.base import EngineStats

        self.name, self.stats, self.progress, self.seen, self.closed = name, EngineStats(), None, [], False
        self.variant_info = {"strategy": "base", "memory_footprint_bytes": 1 if name == "hf" else None,
                             "engine": {"name": name}}

    def run(self, items, on_batch, done=()):
        todo = [it for it in items if it.key not in set(done)]
        self.seen += [it.request.kind for it in todo]
        self.stats.forward_tokens += len(todo)
        on_batch([(it, self.name) for it in todo])
        if self.progress:
            self.progress(len(todo))

    def describe(self):
        return {"name": self.name}

    def close(self):
        self.closed = True


def test_auto_routes_each_kind_and_opens_engines_lazily():
    from biasshift.engine.auto import ROUTES, AutoEngine

    opened = {}

    def opener(name):
        return lambda: opened.setdefault(name, _FakeEngine(name))

    eng = AutoEngine(None, None, EngineSettings(), openers={"hf": opener("hf"), "vllm": opener("vllm")})
    progress = []
    eng.progress = progress.append
    scoring = [Keyed("a", "a", LoglikRequest("x", "y")), Keyed("b", "b", ChoiceRequest("p", ("A", "B"))),
               Keyed("c", "c", LoglikIdsRequest((1, 2)))]
    out = []
    eng.run(scoring, out.extend)
    assert set(opened) == {"hf"}  # scoring only: no vLLM server
    gen = [Keyed("g", "g", GenerateRequest("p", 2)), Keyed("h", "h", GenerateRequest("p", 2))]
    eng.run(scoring + gen, out.extend, done={"a", "b", "c", "h"})
    assert {k.key: e for k, e in out} == {"a": "hf", "b": "hf", "c": "hf", "g": "vllm"}
    assert opened["vllm"].seen == ["generate"] and sorted(opened["hf"].seen) == ["choice", "loglik", "loglik_ids"]
    assert ROUTES["generate"] == "vllm" and all(ROUTES[k] == "hf" for k in ("loglik", "loglik_ids", "choice"))
    assert eng.stats.forward_tokens == 4 and sum(progress) == 4
    info = eng.variant_info
    assert info["memory_footprint_bytes"] == 1 and info["engine"]["name"] == "auto"
    assert set(info["engine"]["engines"]) == {"hf", "vllm"}
    eng.close()
    assert opened["hf"].closed and opened["vllm"].closed


def test_auto_without_vllm_is_the_hf_engine_and_refuses_what_vllm_cannot_serve(monkeypatch, tiny_dir):
    from biasshift import strategies
    from biasshift.engine import auto, make_engine
    from biasshift.engine import vllm as V
    from biasshift.models import ModelSpec

    spec = ModelSpec(str(tiny_dir), dtype="float32", device="cpu")
    monkeypatch.setattr(V, "available", lambda: False)
    eng = make_engine("auto", strategies.get("base"), spec, EngineSettings())
    try:
        assert eng.name == "hf" and "no vLLM environment" in eng.variant_info["engine"]["selected_by"]
    finally:
        eng.close()
    monkeypatch.setattr(V, "available", lambda: True)
    with pytest.raises(ConfigError, match="--engine auto answers generation requests with vLLM.*kv8"):
        auto.AutoEngine.open(strategies.get("kv8"), spec, EngineSettings())


# ---------------------------------------------------------------------------------------------- real vLLM
GGUF = Path(os.environ.get("BIASSHIFT_SMOLLM2_GGUF", REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
N_PROMPTS = 6


def _requests(name: str, tok, n: int, optional: bool = False, **options):
    from biasshift import benchmarks
    from biasshift.benchmarks.base import RequestContext
    from biasshift.engine.hf import anchored_tokenize
    from biasshift.plan import make_renderer

    b = benchmarks.get(name)(options or None)
    files = {f.rel: REAL_DATA / f.rel for f in b.data_files}
    if not all(p.is_file() for p in files.values()):
        if optional:
            return []
        pytest.skip(f"{name} data not staged in {REAL_DATA}")
    chat = b.chat_template_default
    ctx = RequestContext(render=make_renderer(tok, chat), seed=0, chat_template=chat, tokenize=anchored_tokenize(tok))
    items = b.select(b.load(files), n, 0)
    return [r for it in items for r in b.requests(it, ctx)]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """The HF engine and the vLLM engine on the same SmolLM2 directory, float32 (one server per module)."""
    if vllm_python() is None:
        pytest.skip("no vLLM environment: `make vllm-env` creates .venv-vllm (or set BIASSHIFT_VLLM_PYTHON)")
    if not GGUF.is_file():
        pytest.skip(f"SmolLM2 GGUF not found at {GGUF} (make smollm2)")
    from biasshift import strategies
    from biasshift.engine.hf import HFEngine
    from biasshift.models import ModelSpec, gguf_to_hf

    old = os.environ["BIASSHIFT_CACHE"]
    os.environ["BIASSHIFT_CACHE"] = str(REPO / ".cache/biasshift")  # keep the dequantised copy between sessions
    try:
        model_dir = gguf_to_hf(GGUF)
    finally:
        os.environ["BIASSHIFT_CACHE"] = old
    spec = ModelSpec(str(model_dir), dtype="float32", device="cpu")
    settings = EngineSettings(batch_size=8, log_dir=str(tmp_path_factory.mktemp("vllm-logs")))
    base = strategies.get("base")
    v = VLLMEngine.open(base, spec, settings)
    pgid = v.server.proc.pid
    h = HFEngine.open(base, spec, settings)
    yield h, v
    h.close()
    v.close()
    assert group_members(pgid) == []  # no orphan server or engine core


def _answers(engine, items, done=()):
    out = {}
    engine.run(items, lambda rs: out.update({k.key: a for k, a in rs}), done=done)
    return out


@pytest.mark.slow
def test_vllm_server_facts(engines):
    h, v = engines
    d = v.variant_info
    hf_bytes = h.variant_info["memory_footprint_bytes"]  # measured on the loaded model
    assert abs(d["memory_footprint_bytes"] - hf_bytes) <= 1e-4 * hf_bytes
    assert d["engine"]["name"] == "vllm" and d["dtype"] == "float32" and d["strategy"] == "base"
    assert d["engine"]["server"]["managed"] and Path(d["engine"]["server"]["log"]).is_file()
    assert "--dtype" in d["engine"]["server"]["args"]


@pytest.mark.slow
def test_vllm_greedy_texts_equal_hf(engines):
    h, v = engines
    items = (_requests("dt_stereotyping", h.tok, N_PROMPTS, max_new_tokens=24)
             + _requests("worldbench", h.tok, N_PROMPTS, max_new_tokens=24))
    assert len(items) >= 2 * N_PROMPTS - 2 and all(not it.request.do_sample for it in items)
    ha, va = _answers(h, items), _answers(v, items)
    assert all(a.engine == "vllm" for a in va.values())
    diff = {k: (ha[k].texts, va[k].texts) for k in ha if ha[k].texts != va[k].texts}
    assert not diff, diff
    assert [ha[k].samples[0].n_tokens for k in ha] == [va[k].samples[0].n_tokens for k in ha]
    assert [ha[k].samples[0].finish for k in ha] == [va[k].samples[0].finish for k in ha]


@pytest.mark.slow
def test_vllm_loglik_within_1e3_of_hf(engines):
    h, v = engines
    items = _requests("crows_pairs", h.tok, 8)
    ids = h.encode("The doctor said yes, the nurse said no. Poor people are lazy.")
    items += [Keyed("ids", "ids", LoglikIdsRequest(tuple([h._anchor_id()] + ids)))]
    ha, va = _answers(h, items), _answers(v, items)
    assert len(ha) == len(items) >= 17
    for k in ha:
        assert va[k].n_tokens == ha[k].n_tokens and va[k].anchor == ha[k].anchor, k
        assert abs(va[k].sum - ha[k].sum) < 1e-3, (k, va[k].sum, ha[k].sum)
        assert abs(va[k].mean - ha[k].mean) < 1e-3 and va[k].greedy == ha[k].greedy, k


@pytest.mark.slow
def test_vllm_choice_probabilities_within_1e3_of_hf(engines):
    h, v = engines
    items = _requests("discrim_eval", h.tok, 1)[:6] + _requests("mmlu", h.tok, 2, optional=True)[:4]
    assert items and all(it.request.kind == "choice" for it in items)
    ha, va = _answers(h, items), _answers(v, items)
    for k in ha:
        a, b = ha[k], va[k]
        assert a.top_token == b.top_token, k
        for lab in a.raw:
            assert abs(a.raw[lab] - b.raw[lab]) < 1e-3 and abs(a.probs[lab] - b.probs[lab]) < 1e-3, (k, lab)
            # every token variant, also those far outside any top-k (exact, not truncated)
            for (pa, ia, xa), (pb, ib, xb) in zip(a.tokens[lab], b.tokens[lab]):
                assert (pa, ia) == (pb, ib) and abs(xa - xb) < 1e-3
        assert abs(a.mass_outside - b.mass_outside) < 1e-3
        if a.strict is not None:
            assert all(abs(a.strict[lab] - b.strict[lab]) < 1e-3 for lab in a.strict)


@pytest.mark.slow
def test_vllm_sampling_is_seeded_per_sample(engines):
    """Same (seed, key, sample) -> the same vLLM sample, on any request order; a different sample index or
    seed -> another stream. vLLM samples are not the HF engine's (another sampler), so none is compared."""
    _, v = engines
    reqs = [Keyed(f"s{i}", f"s{i}", GenerateRequest(p, 12, do_sample=True, temperature=1.0, n=3, seed=0))
            for i, p in enumerate(["Once upon a time", "The nurse said", "My favourite food is"])]
    first = _answers(v, reqs)
    again = _answers(v, list(reversed(reqs)))
    assert {k: a.texts for k, a in first.items()} == {k: a.texts for k, a in again.items()}
    assert all(len(set(a.texts)) > 1 for a in first.values())
    other = _answers(v, [Keyed("s0", "s0", GenerateRequest("Once upon a time", 12, do_sample=True, n=3, seed=1))])
    assert other["s0"].texts != first["s0"].texts
