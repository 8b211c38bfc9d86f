"""``gptq@wBgG`` and ``awq@wBgG``: GPTQ / AWQ checkpoints built here from the base model with llmcompressor.

llmcompressor pins an older transformers than biasshift, so it runs in its **own** virtual environment
(``.venv-llmc``, ``make llmc-env``) as a subprocess: :mod:`.llmc_worker` (stdlib + torch + transformers +
llmcompressor only) runs ``oneshot`` with GPTQ, or with AWQ smoothing followed by round-to-nearest
quantization, and writes a compressed-tensors checkpoint.  Nothing of llmcompressor is imported here.

Build:

1. the calibration windows are drawn exactly as for Wanda (:func:`biasshift.calibration.load_calibration_ids`:
   ``--calib-data``, ``--calib-samples``, ``--calib-seqlen`` capped at ``max_position_embeddings``, ``--seed``)
   with the base tokenizer, and written as token ids to a temporary JSON Lines file;
2. the worker runs (interpreter: ``$BIASSHIFT_LLMC_PYTHON``, else ``.venv-llmc/bin/python`` in the repository
   that holds this package), its output kept in ``llmc-build.log`` in the entry (and next to the cache on
   failure) and its progress steps echoed to stderr;
3. the checkpoint is moved atomically into the variant cache (:mod:`.varcache`), keyed by the base model's
   fingerprint, the settings, the calibration file's sha256 and the llmcompressor version;
4. it is loaded through the ordinary checkpoint path (:mod:`.checkpoint`), like a published one.

``--strategy-checkpoint gptq@w4g64=PATH`` loads PATH instead of building (its quantization_config must then
have those bits and that group size).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from ..errors import BiasshiftError, ConfigError
from ..rundir import max_positions
from . import varcache
from .base import StrategyParams
from .checkpoint import _Checkpoint
from .compose import BuildContext

#: the llmcompressor release the environment is made with (``make llmc-env``)
LLMC_VERSION = "0.14.0.1"
LLMC_TORCH = "2.13.0"
#: bump when the build procedure changes in a way that changes the checkpoint
BUILD_VERSION = 1
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128, 256)
FORMAT = "pack-quantized"
ENV_VAR = "BIASSHIFT_LLMC_PYTHON"
WORKER = Path(__file__).with_name("llmc_worker.py")
_SETTING = re.compile(r"w(\d+)g(\d+)")
_LAYER = re.compile(r"\((\d+)/(\d+)\): Calibrating")


class BuildError(BiasshiftError):
    """The llmcompressor worker failed."""


def repo_root() -> Path:
    """The repository that holds this package (src/biasshift/strategies/llmc.py -> the repository)."""
    return Path(__file__).resolve().parents[3]


def install_command(root: Path | None = None) -> str:
    root = root or repo_root()
    return (f"cd {root} && make llmc-env   (= python3 -m venv .venv-llmc && .venv-llmc/bin/python -m pip install "
            f"torch=={LLMC_TORCH} && .venv-llmc/bin/python -m pip install llmcompressor=={LLMC_VERSION}; torch "
            "first, or pip pulls a multi-GB CUDA build)")


def llmc_python() -> Path:
    """The llmcompressor environment's interpreter, or ConfigError saying how to make it."""
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ConfigError(f"{ENV_VAR}={env} is not an executable Python interpreter")
        return p
    p = repo_root() / ".venv-llmc" / "bin" / "python"
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise ConfigError(
            f"building GPTQ/AWQ checkpoints needs llmcompressor in its own environment, and {p} does not exist. "
            f"Make it with: {install_command()}; or point {ENV_VAR} at the python of an environment with "
            f"llmcompressor=={LLMC_VERSION}; or load a published checkpoint with --strategy-checkpoint"
        )
    return p


def llmc_version(python: Path) -> str:
    try:
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('llmcompressor'))"],
            capture_output=True, text=True, timeout=120, env=_worker_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run the llmcompressor environment's python {python}: {exc}") from None
    if out.returncode != 0 or not out.stdout.strip():
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{python} has no llmcompressor ({tail[0]}); make the environment with: {install_command()}")
    return out.stdout.strip()


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")  # the worker reads local directories only
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


# ---------------------------------------------------------------------------------------- settings
class LlmcParams(StrategyParams):
    bits: int = 4
    group_size: int = 128
    #: the plain names ``gptq`` / ``awq``: when ``group_size`` does not divide every quantized layer's input
    #: size (SmolLM2's 576), use the largest supported size below it that does, recorded in the variant's
    #: config and notes. An explicit ``gptq@w4g128`` never falls back: it is refused with the sizes that fit.
    group_fallback: bool = False

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in BITS:
            raise ValueError(f"{v} bits is not supported; use {' or '.join(map(str, BITS))} (W4A16 / W8A16 schemes)")
        return v

    @field_validator("group_size")
    @classmethod
    def _group(cls, v: int) -> int:
        if v not in GROUP_SIZES:
            raise ValueError(f"group size {v} is not supported; use one of {', '.join(map(str, GROUP_SIZES))}")
        return v


def _dtype_bytes(code: str) -> int:
    return {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
            "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}[code]


def checkpoint_bits(path: Path) -> dict[str, Any]:
    """Storage bits per weight of the quantized linears of a saved compressed-tensors checkpoint.

    (bytes of the packed / integer weights + their scales, zero points and group indices) x 8 / logical number
    of weights of those linears, read from the safetensors headers (and the two-element ``weight_shape``)."""
    from safetensors import safe_open

    modules: dict[str, dict[str, Any]] = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                prefix, _, leaf = key.rpartition(".")
                sl = st.get_slice(key)
                shape, dtype = list(sl.get_shape()), sl.get_dtype()
                nbytes = math.prod(shape) * _dtype_bytes(dtype)
                m = modules.setdefault(prefix, {})
                if leaf == "weight_shape":
                    m["logical"] = int(math.prod(int(x) for x in st.get_tensor(key).tolist()))
                elif leaf in ("weight_packed", "weight_scale", "weight_zero_point", "weight_g_idx"):
                    m[leaf] = nbytes
                elif leaf == "weight":
                    m["weight"] = (nbytes, math.prod(shape), dtype)
    n = storage = count = 0
    for m in modules.values():
        if "weight_packed" in m and "logical" in m:
            logical, data = m["logical"], m["weight_packed"]
        elif "weight" in m and "weight_scale" in m and m["weight"][2].startswith(("I", "U")):  # naive-quantized
            data, logical, _ = m["weight"]
        else:
            continue
        count += 1
        n += logical
        storage += data + m.get("weight_scale", 0) + m.get("weight_zero_point", 0) + m.get("weight_g_idx", 0)
    return {"n_quantized_linears": count, "n_weights": n, "storage_bytes": storage,
            "bits_per_weight": round(8 * storage / n, 6) if n else None}


def _linear_in_features(base: Path) -> dict[str, int]:
    """``leaf name -> in_features`` of the 2-D ``*.weight`` tensors inside the decoder layers (safetensors
    headers only), e.g. {"q_proj": 576, "down_proj": 1536}."""
    from safetensors import safe_open

    out: dict[str, int] = {}
    for f in sorted(base.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                if not key.endswith(".weight") or ".layers." not in key:
                    continue
                shape = st.get_slice(key).get_shape()
                if len(shape) == 2:
                    leaf = key[: -len(".weight")].rpartition(".")[2]
                    out[leaf] = int(shape[1])
    return out


# ---------------------------------------------------------------------------------------- strategies
class _Llmc(_Checkpoint):
    Params = LlmcParams
    params: LlmcParams
    setting_forms = ("wBITSgGROUP",)
    #: AWQ keeps a zero point (AutoAWQ's standard); GPTQ is symmetric (llmcompressor's W4A16 preset)
    symmetric: ClassVar[bool]

    # ------------------------------------------------------------------ names
    @classmethod
    def forms_text(cls) -> str:
        return (f"{cls.method}@wBITSgGROUP, e.g. {cls.method}@w4g128, {cls.method}@w4g64, {cls.method}@w8g128 "
                f"(bits {' or '.join(map(str, BITS))}; group size {', '.join(map(str, GROUP_SIZES))})")

    @classmethod
    def parse_setting(cls, text: str) -> list[dict[str, Any]]:
        m = _SETTING.fullmatch(text.strip().lower())
        if m is None:
            raise ConfigError(f"strategy {cls.method}@{text}: setting {text!r} is not of the form {cls.forms_text()}")
        return [{"bits": int(m.group(1)), "group_size": int(m.group(2))}]

    @classmethod
    def format_setting(cls, params: Any) -> str:
        return f"w{params.bits}g{params.group_size}"

    def describe(self) -> str:
        return self.description

    # ------------------------------------------------------------------ what is recorded
    def scheme(self) -> str:
        return f"W{self.params.bits}A16" + ("" if self.symmetric else "_ASYM")

    @property
    def group_size(self) -> int:
        """The group size the build uses: the requested one, or the fallback ``_check_group_size`` chose."""
        return getattr(self, "_group_used", None) or self.params.group_size

    def config(self) -> dict[str, Any]:
        p = self.params
        if self.ref():
            return {**super().config(), "bits": p.bits, "group_size": p.group_size}
        s = self.settings
        return {
            "method": self.method,
            "builder": "llmcompressor oneshot (its own environment)",
            "bits": p.bits,
            "group_size": p.group_size,
            "symmetric": self.symmetric,
            "scheme": self.scheme(),
            "format": FORMAT,
            "targets": "every nn.Linear except lm_head",
            "calib_data": s.calib_data,
            "calib_samples": s.calib_samples,
            "calib_seqlen": s.calib_seqlen,
            "seed": s.seed,
            "calib_text": "raw, no chat template, no special tokens (the Wanda windows)",
            **self.recipe(),
            "checkpoint": None,
            "fused_layers": False,
            "tokenizer": "the base model's",
        }

    def recipe(self) -> dict[str, Any]:
        return {}

    def validate(self) -> None:
        if self.ref():
            return
        s = self.settings
        if s.calib_samples < 1 or s.calib_seqlen < 2:
            raise ConfigError("--calib-samples must be >= 1 and --calib-seqlen >= 2")
        if s.calib_data != "c4" and not Path(s.calib_data).expanduser().is_file():
            raise ConfigError(
                f"--calib-data {s.calib_data!r} is neither 'c4' nor an existing file (use a .txt file with "
                "blank-line separated documents or a .jsonl / .json.gz file with one {\"text\": ...} per line)"
            )
        llmc_python()

    # ------------------------------------------------------------------ build + load
    def prepare(self, ctx: BuildContext) -> Path:
        ref = self.ref()
        if ref:
            path = self.prepare_checkpoint(ctx, ref)
            self._check_settings_match(ctx, ref)
            return path
        python = llmc_python()
        self._check_group_size(ctx)
        version = llmc_version(python)
        material = self._material(ctx, version)
        key = varcache.variant_key(material)
        found = varcache.lookup(key)
        hit = found is not None
        if found is None:
            found = varcache.store(key, material, lambda tmp: self._build(ctx, material, python, tmp))
        path, meta = found
        out = self.prepare_checkpoint(ctx, str(path), built=True)
        res = ctx.resolved.setdefault(self.name, {})
        res["calib_seqlen"] = material["calib_seqlen"]
        res["llmcompressor_version"] = version
        if material["calib_seqlen"] != self.settings.calib_seqlen:
            res["calib_seqlen_requested"] = self.settings.calib_seqlen
            ctx.notes.append(f"{self.name}: calibration length capped at max_position_embeddings = "
                             f"{material['calib_seqlen']}")
        facts = ctx.facts.setdefault(self.name, {})
        facts["cache"] = {"key": key, "path": str(path), "hit": hit}
        facts["build"] = {k: meta.get(k) for k in ("method", "bits", "group_size", "symmetric", "format",
                                                   "build_seconds", "build_device", "llmcompressor_version",
                                                   "worker_versions", "created")}
        facts["build_seconds"] = meta.get("build_seconds")
        facts["calibration"] = meta.get("calibration")
        facts["checkpoint_bits"] = meta.get("checkpoint_bits")
        facts["checkpoint_bits_per_weight"] = (meta.get("checkpoint_bits") or {}).get("bits_per_weight")
        return out

    def _check_settings_match(self, ctx: BuildContext, ref: str) -> None:
        if "@" not in self.name:
            return  # a plain name says nothing about the settings
        qc = ctx.facts.get(self.name, {}).get("checkpoint_quantization_config") or {}
        found = set()
        for group in (qc.get("config_groups") or {}).values():
            w = (group or {}).get("weights") or {}
            found.add((w.get("num_bits"), w.get("group_size")))
        if not found and "bits" in qc:  # AutoAWQ / GPTQ formats
            found.add((qc.get("bits"), qc.get("group_size") or qc.get("q_group_size")))
        want = (self.params.bits, self.params.group_size)
        if found and found != {want}:
            got = ", ".join(f"w{b}g{g}" for b, g in sorted(found, key=str))
            raise ConfigError(f"strategy {self.name}: --strategy-checkpoint {self.name}={ref} holds {got}, not "
                              f"{self.format_setting(self.params)}; name it with its own setting (or plain "
                              f"{self.method})")

    def _check_group_size(self, ctx: BuildContext) -> None:
        g = self.params.group_size
        sizes = _linear_in_features(ctx.base_path)
        bad = {k: v for k, v in sizes.items() if v % g}
        if bad:
            ok = [x for x in GROUP_SIZES if all(v % x == 0 for v in sizes.values())]
            below = [x for x in ok if x < g]
            if self.params.group_fallback and below:
                self._group_used = max(below)
                ctx.resolved.setdefault(self.name, {})["group_size"] = self._group_used
                ctx.notes.append(
                    f"{self.name}: group size {self._group_used}, not the default {g}: {g} does not divide the input "
                    f"size of {', '.join(f'{k} ({v})' for k, v in sorted(bad.items())[:3])}"
                    f"{' ...' if len(bad) > 3 else ''}; {self._group_used} is the largest supported size that divides "
                    f"every quantized layer (name {self.method}@w{self.params.bits}g{g} to refuse instead)")
                return
            alt = (f"; group sizes that divide them all: {', '.join(f'{self.method}@w{self.params.bits}g{x}' for x in ok)}"
                   if ok else "")
            raise ConfigError(
                f"strategy {self.name}: group size {g} does not divide the input size of "
                + ", ".join(f"{k} ({v})" for k, v in sorted(bad.items()))
                + f" in {ctx.spec.source}" + alt
            )

    def _material(self, ctx: BuildContext, version: str) -> dict[str, Any]:
        from ..calibration import C4_FILENAME, C4_REPO_ID
        from ..data import sha256_file

        s = self.settings
        limit = max_positions(ctx.base_path)
        seqlen = min(s.calib_seqlen, limit) if limit else s.calib_seqlen
        if s.calib_data == "c4":
            calib = {"source": "c4", "repo": C4_REPO_ID, "file": C4_FILENAME}
        else:
            calib = {"source": "file", "sha256": sha256_file(Path(s.calib_data).expanduser())}
        return {
            "kind": f"llmc-{self.method}",
            "build_version": BUILD_VERSION,
            "llmcompressor_version": version,
            "base_fingerprint": ctx.model_info["fingerprint"],
            "method": self.method,
            "bits": self.params.bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "format": FORMAT,
            "recipe": self.recipe(),
            "calib": calib,
            "calib_samples": s.calib_samples,
            "calib_seqlen": seqlen,
            "seed": s.seed,
            "calib_dtype": "the base checkpoint's",
        }

    def _build(self, ctx: BuildContext, material: dict[str, Any], python: Path, tmp: Path) -> dict[str, Any]:
        from ..calibration import CalibrationDataError, load_calibration_ids

        s = self.settings
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the concatenation fallback is recorded in the metadata
                ids, calib_meta = load_calibration_ids(
                    ctx.tokenizer, source="c4" if s.calib_data == "c4" else str(Path(s.calib_data).expanduser()),
                    nsamples=s.calib_samples, seqlen=material["calib_seqlen"], seed=s.seed)
        except CalibrationDataError as exc:
            raise BuildError(f"{self.name} calibration data: {exc}") from None
        except ValueError as exc:
            raise BuildError(f"{self.name} calibration settings: {exc}") from None
        with tempfile.TemporaryDirectory(prefix="biasshift-llmc-") as td:
            calib = Path(td) / "calibration.jsonl"
            with open(calib, "w", encoding="utf-8") as fh:
                for row in ids.tolist():
                    fh.write(json.dumps({"input_ids": row}) + "\n")
            from ..data import sha256_file

            calib_meta["windows_sha256"] = sha256_file(calib)
            cmd = [str(python), str(WORKER), "--model", str(ctx.base_path), "--out", str(tmp),
                   "--method", self.method, "--bits", str(self.params.bits),
                   "--group-size", str(self.group_size), "--symmetric", "yes" if self.symmetric else "no",
                   "--calib", str(calib), "--samples", str(int(ids.shape[0])), "--seqlen", str(int(ids.shape[1])),
                   "--device", str(ctx.device), "--format", FORMAT]
            if ctx.spec.trust_remote_code:
                cmd.append("--trust-remote-code")
            log = tmp / "llmc-build.log"
            rc, tail = self._run_worker(cmd, log)
        if rc != 0:
            kept = varcache.variants_root() / f"llmc-failed-{material['method']}-{os.getpid()}.log"
            try:
                shutil.copyfile(log, kept)
            except OSError:
                kept = log
            raise BuildError(
                f"{self.name}: the llmcompressor worker failed (exit status {rc}; full log {kept}). Last lines:\n"
                + "\n".join(tail)
            )
        build_seconds = round(time.perf_counter() - t0, 3)
        try:
            worker = json.loads((tmp / "llmc-build.json").read_text())
        except (OSError, ValueError) as exc:
            raise BuildError(f"{self.name}: the llmcompressor worker wrote no llmc-build.json in {tmp}: {exc}") from None
        if not (tmp / "config.json").is_file():
            raise BuildError(f"{self.name}: the llmcompressor worker wrote no config.json in {tmp}")
        bits = checkpoint_bits(tmp)
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "method": self.method,
            "bits": self.params.bits,
            "group_size": self.group_size,
            "symmetric": self.symmetric,
            "format": FORMAT,
            "base_path": str(ctx.base_path),
            "build_device": str(ctx.device),
            "build_seconds": build_seconds,
            "worker_seconds": worker.get("worker_seconds"),
            "oneshot_seconds": worker.get("oneshot_seconds"),
            "llmcompressor_version": (worker.get("versions") or {}).get("llmcompressor"),
            "worker_versions": worker.get("versions"),
            "worker_settings": worker.get("settings"),
            "recipe_args": worker.get("recipe_args"),
            "calibration": calib_meta,
            "checkpoint_bits": bits,
        }

    def _run_worker(self, cmd: list[str], log: Path) -> tuple[int, list[str]]:
        tail: deque[str] = deque(maxlen=40)
        seen, t0 = "", time.perf_counter()
        print(f"biasshift: building {self.name} with llmcompressor (log: {log})", file=sys.stderr, flush=True)
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(" ".join(cmd) + "\n")
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        errors="replace", env=_worker_env())
            except OSError as exc:
                raise BuildError(f"{self.name}: cannot start the llmcompressor worker {cmd[0]}: {exc}") from None
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    line = line.rstrip("\n")
                    if not line.strip():
                        continue
                    fh.write(line + "\n")
                    step = _LAYER.search(line)
                    if step and step.group(0) != seen:  # llmcompressor's sequential pipeline: one line per layer
                        seen = step.group(0)
                        print(f"  {self.name}: calibrating subgraph {step.group(1)}/{step.group(2)} "
                              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
                    if "it/s]" in line or "s/it]" in line:  # progress bars: log only
                        continue
                    tail.append(line)
                    if line.startswith("[llmc-worker"):  # the worker's steps; llmcompressor's own log: file only
                        print(f"  {self.name}: {line}", file=sys.stderr, flush=True)
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        return rc, list(tail)

    def measure(self, model: Any, ctx: BuildContext) -> dict[str, Any]:
        out = super().measure(model, ctx)
        cb = ctx.facts.get(self.name, {}).get("checkpoint_bits_per_weight")
        if cb is not None:
            out["bits_per_weight_as_loaded"] = out.get("bits_per_weight")
        return out

    def notes(self, ctx: BuildContext) -> list[str]:
        out = super().notes(ctx)
        if not self.ref():
            b = ctx.facts.get(self.name, {}).get("build") or {}
            secs = b.get("build_seconds")
            out.append(
                f"{self.name}: built here with llmcompressor {b.get('llmcompressor_version')} "
                f"({self.method.upper()}, {self.scheme()}, group size {self.group_size}, "
                f"{'symmetric' if self.symmetric else 'with zero point'}) on {self.settings.calib_data} calibration "
                f"text" + (f"; the build took {secs:.0f} s on {b.get('build_device')}" if isinstance(secs, (int, float))
                          else "")
            )
        return out


class LlmcGPTQ(_Llmc):
    method = "gptq"
    description = ("GPTQ built here from the base model with llmcompressor (own environment, make llmc-env), "
                   "symmetric, calibrated on --calib-*; cached on disk")
    modifier = "GPTQModifier"
    symmetric = True

    def recipe(self) -> dict[str, Any]:
        return {"gptq": {"block_size": 128, "dampening_frac": 0.01, "actorder": "static"}}


class LlmcAWQ(_Llmc):
    method = "awq"
    description = ("AWQ built here from the base model with llmcompressor (own environment, make llmc-env), "
                   "zero point, duo scaling, calibrated on --calib-*; cached on disk")
    modifier = "AWQModifier"
    symmetric = False

    def recipe(self) -> dict[str, Any]:
        return {"awq": {"duo_scaling": True, "n_grid": 20, "mappings": "llmcompressor's for the architecture"}}
