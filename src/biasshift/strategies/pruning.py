"""Pruning strategies: ``wanda``, ``sparsegpt`` and ``magnitude``, unstructured or N:M.

Names (parsed by the registry, :mod:`biasshift.strategies`): ``METHOD@SPARSITY`` (``sparsegpt@0.6``,
0 < SPARSITY < 1, per output row), ``METHOD@N:M`` (``wanda@2:4``: N pruned in every aligned group of M
input weights of a row), sweeps ``METHOD@START:STOP:STEP`` (inclusive stop) and lists
``METHOD@2:4,4:8``. The old names ``wanda`` (= ``wanda@0.5``) and ``wanda-2:4`` (= ``wanda@2:4``) are
the canonical variant names of those two settings, so run directories made before still resume.

The base model is loaded in float32 on the run device, calibrated (Wanda, SparseGPT) on
``--calib-samples`` windows of ``--calib-seqlen`` tokens (capped at ``max_position_embeddings``) drawn
from ``--calib-data`` with the run ``--seed`` (:func:`biasshift.calibration.load_calibration_ids`),
pruned layer by layer (:func:`.wanda.prune_sequential_`), and saved as a safetensors checkpoint in the
variant cache (:mod:`.varcache`), keyed by the base fingerprint, the settings and (calibrated methods
only) the calibration source, its sha256 and sizes.  Wanda and magnitude only zero weights, so their
checkpoint is stored in the base checkpoint's own dtype without loss; SparseGPT also updates the kept
weights, computed in float32 and stored in the base checkpoint's dtype.  Every build loads that
checkpoint in the run dtype (or with a weight quantizer, for ``wanda+int8`` etc.).
"""

from __future__ import annotations

import gc
import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from ..errors import BiasshiftError, ConfigError
from ..rundir import max_positions
from . import varcache
from .base import StrategyParams
from .compose import BuildContext, PruneStage
from .measure import linear_report, zero_report

#: bump when the pruning procedure changes in a way that changes the pruned weights
PRUNE_VERSION = 1
#: the most variants one sweep may expand to
MAX_SWEEP = 100


class CalibrationError(BiasshiftError):
    """The pruning calibration data cannot be obtained or is unusable."""


def _checkpoint_dtype(path: Path) -> str:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return name if name in ("float32", "float16", "bfloat16") else "float32"


# ------------------------------------------------------------------------------------------ typed settings
def _nm_error(n: Any, m: Any) -> str:
    return f"invalid N:M pattern {n}:{m}: need whole numbers with 0 < N < M and M >= 2 (e.g. 2:4, 4:8)"


class PruneParams(StrategyParams):
    """``sparsity``: fraction of the weights of each output row set to zero, 0 < sparsity < 1 (default 0.5);
    ``pattern``: (N, M) for N:M semi-structured sparsity (N zeros in every aligned group of M input
    weights of a row; the sparsity is then N/M)."""

    sparsity: float = 0.5
    pattern: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _sparsity_of_pattern(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pattern") is not None:
            pat = cls._pattern(data["pattern"])
            if pat is not None:
                nm = pat[0] / pat[1]
                s = data.get("sparsity")
                if s is not None and not (isinstance(s, (int, float)) and math.isclose(float(s), nm, abs_tol=1e-9)):
                    raise ValueError(f"sparsity {s} contradicts pattern {pat[0]}:{pat[1]} (whose sparsity is {nm:g})")
                data = {**data, "pattern": pat, "sparsity": nm}
        return data

    @staticmethod
    def _pattern(value: Any) -> tuple[int, int] | None:
        if value is None:
            return None
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", value)
            if not m:
                raise ValueError(f"pattern must look like N:M (e.g. 2:4), not {value!r}")
            value = (int(m.group(1)), int(m.group(2)))
        if not isinstance(value, (tuple, list)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise ValueError(f"pattern must be two whole numbers (N, M), not {value!r}")
        n, m = value
        if not (0 < n < m and m >= 2):
            raise ValueError(_nm_error(n, m))
        return (n, m)

    @field_validator("sparsity")
    @classmethod
    def _sparsity_range(cls, v: float) -> float:
        if not (math.isfinite(v) and 0.0 < v < 1.0):
            raise ValueError(f"sparsity must be a fraction with 0 < sparsity < 1, not {v}")
        return round(float(v), 10)

    @property
    def n(self) -> int:
        return self.pattern[0] if self.pattern else 0

    @property
    def m(self) -> int:
        return self.pattern[1] if self.pattern else 0

    @property
    def pattern_name(self) -> str:
        return f"{self.n}:{self.m}" if self.pattern else "unstructured"


class SparseGPTParams(PruneParams):
    """Plus ``blocksize`` (columns per lazy-update block, 128) and ``percdamp`` (Hessian dampening as a
    fraction of its mean diagonal, 0.01)."""

    blocksize: int = 128
    percdamp: float = 0.01

    @field_validator("blocksize")
    @classmethod
    def _blocksize(cls, v: int) -> int:
        if v < 1:
            raise ValueError("blocksize must be >= 1")
        return v

    @field_validator("percdamp")
    @classmethod
    def _percdamp(cls, v: float) -> float:
        if not (math.isfinite(v) and 0 <= v < 1):
            raise ValueError("percdamp must be in [0, 1)")
        return v


def _fmt_float(x: float) -> str:
    return repr(round(float(x), 10))


def _parse_float(method: str, text: str, forms: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{method}@{text}: {text!r} is not a number; valid forms: {forms}") from None
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise ConfigError(f"{method}@{text}: sparsity must be a fraction with 0 < sparsity < 1; valid forms: {forms}")
    return round(v, 10)


def sweep_values(method: str, text: str, forms: str) -> list[float]:
    """``START:STOP:STEP`` -> [START, START+STEP, ..., STOP] rounded to 10 decimals (STOP included; STOP must
    be START + k * STEP)."""
    parts = text.split(":")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{method}@{text}: a sweep is START:STOP:STEP with three numbers; valid forms: {forms}") from None
    if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0:
        raise ConfigError(f"{method}@{text}: the sweep step must be a number > 0; valid forms: {forms}")
    if stop < start:
        raise ConfigError(f"{method}@{text}: the sweep stop {stop:g} is below its start {start:g}; valid forms: {forms}")
    k = (stop - start) / step
    count = round(k)
    if abs(k - count) > 1e-6:
        raise ConfigError(
            f"{method}@{text}: the stop {stop:g} is not start + k * step (k = {k:.3f}); the stop is included, so "
            f"choose e.g. {method}@{_fmt_float(start)}:{_fmt_float(start + math.floor(k) * step)}:{_fmt_float(step)}"
        )
    if count + 1 > MAX_SWEEP:
        raise ConfigError(f"{method}@{text}: {count + 1} variants; a sweep may give at most {MAX_SWEEP}")
    values = [round(start + i * step, 10) for i in range(count + 1)]
    bad = [v for v in values if not 0.0 < v < 1.0]
    if bad:
        raise ConfigError(
            f"{method}@{text}: every sparsity of a sweep must satisfy 0 < sparsity < 1 (got {_fmt_float(bad[0])}); "
            f"valid forms: {forms}"
        )
    return values


# ------------------------------------------------------------------------------------------ the strategies
class _Pruner(PruneStage):
    Params = PruneParams
    setting_forms = ("SPARSITY", "N:M", "START:STOP:STEP")
    #: the paper name in messages
    label: ClassVar[str] = ""
    #: whether the method reads calibration data (magnitude does not)
    calibrated: ClassVar[bool] = True
    params: PruneParams

    # ---------------------------------------------------------------- names
    @classmethod
    def forms_text(cls) -> str:
        k = cls.method
        return (f"{k}@SPARSITY with 0 < SPARSITY < 1 (e.g. {k}@0.5), {k}@N:M with 0 < N < M (e.g. {k}@2:4), "
                f"a sweep {k}@START:STOP:STEP (e.g. {k}@0.1:0.6:0.1), or a list {k}@2:4,4:8")

    @classmethod
    def parse_setting(cls, text: str) -> list[dict[str, Any]]:
        text = text.strip()
        forms = cls.forms_text()
        if not text:
            raise ConfigError(f"{cls.method}@ needs a setting; valid forms: {forms}")
        colons = text.count(":")
        if colons == 2:
            return [{"sparsity": v} for v in sweep_values(cls.method, text, forms)]
        if colons == 1:
            m = re.fullmatch(r"(\d+):(\d+)", text)
            if not m:
                raise ConfigError(f"{cls.method}@{text}: N:M takes two whole numbers; valid forms: {forms}")
            n_, m_ = int(m.group(1)), int(m.group(2))
            if not (0 < n_ < m_ and m_ >= 2):
                raise ConfigError(f"{cls.method}@{text}: {_nm_error(n_, m_)}; valid forms: {forms}")
            return [{"pattern": (n_, m_)}]
        if colons == 0:
            return [{"sparsity": _parse_float(cls.method, text, forms)}]
        raise ConfigError(f"{cls.method}@{text}: too many ':'; valid forms: {forms}")

    @classmethod
    def format_setting(cls, params: Any) -> str:
        p = cls.make_params(params)
        assert isinstance(p, PruneParams)
        return f"{p.n}:{p.m}" if p.pattern else _fmt_float(p.sparsity)

    def describe(self) -> str:
        p = self.params
        what = f"{p.pattern_name} semi-structured" if p.pattern else f"{p.sparsity:.0%} unstructured per output row"
        how = "calibrated on --calib-data" if self.calibrated else "no calibration"
        return f"{self.label} pruning, {what}, {how} (cached on disk)"

    @property
    def n(self) -> int:
        return self.params.n

    @property
    def m(self) -> int:
        return self.params.m

    @property
    def sparsity(self) -> float:
        return self.params.sparsity

    @property
    def pattern(self) -> str:
        return self.params.pattern_name

    # ---------------------------------------------------------------- recorded settings
    def _calib_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "calib_data": s.calib_data,
            "calib_samples": s.calib_samples,
            "calib_seqlen": s.calib_seqlen,
            "seed": s.seed,
            "calib_text": "raw, no chat template, no special tokens",
        }

    def _group(self) -> str:
        return f"aligned blocks of {self.m} input columns per output row" if self.m else "per output row"

    def validate(self) -> None:
        if not self.calibrated:
            return
        s = self.settings
        if s.calib_samples < 1 or s.calib_seqlen < 2:
            raise ConfigError("--calib-samples must be >= 1 and --calib-seqlen >= 2")
        if s.calib_data != "c4" and not Path(s.calib_data).expanduser().is_file():
            raise ConfigError(
                f"--calib-data {s.calib_data!r} is neither 'c4' nor an existing file (use a .txt file with "
                "blank-line separated documents or a .jsonl / .json.gz file with one {\"text\": ...} per line)"
            )

    # ---------------------------------------------------------------- cache key
    def _seqlen(self, ctx: BuildContext) -> int:
        limit = max_positions(ctx.base_path)
        s = self.settings
        return min(s.calib_seqlen, limit) if limit else s.calib_seqlen

    def _calib_material(self, ctx: BuildContext) -> dict[str, Any]:
        from ..calibration import C4_FILENAME, C4_REPO_ID
        from ..data import sha256_file

        s = self.settings
        if s.calib_data == "c4":
            calib = {"source": "c4", "repo": C4_REPO_ID, "file": C4_FILENAME}
        else:
            calib = {"source": "file", "sha256": sha256_file(Path(s.calib_data).expanduser())}
        return {"calib": calib, "calib_samples": s.calib_samples, "calib_seqlen": self._seqlen(ctx), "seed": s.seed}

    def material(self, ctx: BuildContext) -> dict[str, Any]:
        """What the cached checkpoint depends on (its key is the sha256 of this)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- stage hook
    def prepare(self, ctx: BuildContext) -> Path:
        material = self.material(ctx)
        key = varcache.variant_key(material)
        found = varcache.lookup(key)
        hit = found is not None
        if found is None:
            found = varcache.store(key, material, lambda tmp: self._prune_and_save(ctx, material, tmp))
        path, meta = found
        if self.calibrated:
            res = ctx.resolved.setdefault(self.name, {})
            res["calib_seqlen"] = material["calib_seqlen"]
            if material["calib_seqlen"] != self.settings.calib_seqlen:
                res["calib_seqlen_requested"] = self.settings.calib_seqlen
                ctx.notes.append(
                    f"{self.name}: calibration length capped at max_position_embeddings = {material['calib_seqlen']}"
                )
        facts = ctx.facts.setdefault(self.name, {})
        facts["cache"] = {"key": key, "path": str(path), "hit": hit}
        facts["pruned_checkpoint_sparsity"] = meta.get("sparsity")
        facts["pruned_checkpoint_zero_fraction_per_linear"] = meta.get("module_sparsity")
        facts["calibration"] = meta.get("calibration")
        facts["prune_seconds"] = meta.get("prune_seconds")
        for w in meta.get("warnings", []):
            ctx.notes.append(f"{self.name}: {w}")
        return path

    def _run(self, model: Any, ids: Any, ctx: BuildContext) -> dict[str, Any]:
        """Prune ``model`` in place; return the method's report (JSON)."""
        raise NotImplementedError

    def _prune_and_save(self, ctx: BuildContext, material: dict[str, Any], tmp: Path) -> dict[str, Any]:
        import torch
        from transformers import AutoModelForCausalLM

        from ..errors import ModelLoadError
        from .wanda import measure_sparsity

        t0 = time.perf_counter()
        ids, calib_meta = (self._calibration(ctx, material) if self.calibrated
                           else (None, {"source": "none", "note": f"{self.label} pruning reads no calibration data"}))
        try:
            model = AutoModelForCausalLM.from_pretrained(
                ctx.base_path, dtype=torch.float32, trust_remote_code=ctx.spec.trust_remote_code
            )
        except Exception as exc:
            raise ModelLoadError(f"could not load {ctx.base_path} for pruning: {type(exc).__name__}: {exc}") from None
        model.to(ctx.device)
        model.eval()
        caught: list[str] = []
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                report = self._run(model, ids, ctx)
            except ValueError as exc:  # unsupported model / pattern: readable
                raise ConfigError(f"{self.name}: {exc}") from None
        caught.extend(str(w.message) for w in rec if issubclass(w.category, UserWarning))
        if calib_meta.get("fallback_concatenated"):
            caught.append(
                f"no calibration document has more than {material['calib_seqlen']} tokens; windows were drawn from "
                "the concatenation of all documents"
            )
        sp = measure_sparsity(model)
        prune_seconds = time.perf_counter() - t0
        save_dtype = getattr(torch, _checkpoint_dtype(ctx.base_path))
        model.to(save_dtype)
        model.save_pretrained(tmp)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base_path": str(ctx.base_path),
            "saved_dtype": str(save_dtype).removeprefix("torch."),
            "prune_device": str(ctx.device),
            "prune_seconds": round(prune_seconds, 3),
            "calibration": calib_meta,
            "report": {k: v for k, v in report.items() if k != "layers"},
            "sparsity": {k: v for k, v in sp.items() if k != "modules"},
            "module_sparsity": {k: v["sparsity"] for k, v in sp["modules"].items()},
            "warnings": caught,
        }

    def _calibration(self, ctx: BuildContext, material: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from ..calibration import CalibrationDataError, load_calibration_ids

        s = self.settings
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the fallback warning is recorded from the metadata instead
                return load_calibration_ids(
                    ctx.tokenizer,
                    source="c4" if s.calib_data == "c4" else str(Path(s.calib_data).expanduser()),
                    nsamples=s.calib_samples,
                    seqlen=material["calib_seqlen"],
                    seed=s.seed,
                )
        except CalibrationDataError as exc:
            raise CalibrationError(f"{self.label} calibration data: {exc}") from None
        except ValueError as exc:
            raise CalibrationError(f"{self.label} calibration settings: {exc}") from None

    def measure(self, model: Any, ctx: BuildContext) -> dict[str, Any]:
        rep = linear_report(model)
        dense = rep["linear_types"].keys() == {"dense"}
        out: dict[str, Any] = {
            "pattern": self.pattern,
            # sparsity of the decoder linears as loaded for inference (after any weight quantization)
            "sparsity": rep["zero_fraction"],
            "n_weights": rep["n_weights"],
            "n_linear": rep["n_linear"],
            "linear_types": rep["linear_types"],
        }
        if dense:
            zr = zero_report(model, self.n, self.m)
            out["zero_fraction_per_linear"] = zr["zero_fraction_per_linear"]
            if self.m:
                for k in ("n_m_pattern_holds", "n_m_groups_exact", "n_m_groups",
                          "n_m_groups_with_exactly_n_zeros_fraction"):
                    out[k] = zr[k]
        return out

    def notes(self, ctx: BuildContext) -> list[str]:
        out: list[str] = []
        if self.m:
            out.append(f"{self.name}: {self.pattern} semi-structured sparsity stored densely (no sparse kernels, no speed-up)")
        return out


class Wanda(_Pruner):
    method = "wanda"
    label = "Wanda"
    description = "Wanda pruning (|W| x input norm), unstructured or N:M, calibrated (cached on disk)"

    def config(self) -> dict[str, Any]:
        # the keys and values of the variants `wanda` and `wanda-2:4` as recorded before settings were typed:
        # `requested` is compared on resume, so these must not change
        s = self.settings
        return {
            "method": "wanda",
            "pattern": self.pattern,
            "sparsity": self.sparsity,
            "comparison_group": self._group(),
            "scope": "every nn.Linear inside the decoder layers (not embeddings, norms, lm_head)",
            "calib_data": s.calib_data,
            "calib_samples": s.calib_samples,
            "calib_seqlen": s.calib_seqlen,
            "seed": s.seed,
            "calib_text": "raw, no chat template, no special tokens",
            "prune_dtype": "float32",
            "batch_size": 1,
        }

    def material(self, ctx: BuildContext) -> dict[str, Any]:
        # unchanged layout: the entries cached by earlier versions are found again
        return {
            "kind": "wanda-pruned",
            "prune_version": PRUNE_VERSION,
            "base_fingerprint": ctx.model_info["fingerprint"],
            "pattern": self.pattern,
            "n": self.n,
            "m": self.m,
            "sparsity": self.sparsity,
            **self._calib_material(ctx),
            "prune_dtype": "float32",
            "batch_size": 1,
        }

    def _run(self, model: Any, ids: Any, ctx: BuildContext) -> dict[str, Any]:
        from .wanda import prune_wanda_  # looked up at call time (tests replace it)

        report = prune_wanda_(model, ids, sparsity=None if self.m else self.sparsity, n=self.n, m=self.m,
                              progress=self.settings.progress, batch_size=1)
        return report.to_dict()

    def notes(self, ctx: BuildContext) -> list[str]:
        return [
            f"{self.name}: pruned here with Wanda (docs/strategies.md, Wanda pruning) on {self.settings.calib_data} calibration text; the "
            "reference loaded the authors' pre-pruned checkpoints, whose calibration settings are unknown (docs/strategies.md, Wanda pruning)",
        ] + super().notes(ctx)


class SparseGPT(_Pruner):
    method = "sparsegpt"
    label = "SparseGPT"
    description = "SparseGPT pruning (OBS weight update), unstructured or N:M, calibrated (cached on disk)"
    Params = SparseGPTParams
    params: SparseGPTParams

    def config(self) -> dict[str, Any]:
        p = self.params
        return {
            "method": "sparsegpt",
            "pattern": self.pattern,
            "sparsity": self.sparsity,
            "comparison_group": (f"aligned blocks of {self.m} input columns per output row, chosen when the block "
                                 "is reached" if self.m else
                                 f"per output row within column blocks of {p.blocksize} (floor(c x sparsity) "
                                 "pruned up to column c)"),
            "saliency": "w^2 / [U_jj]^2, U = upper Cholesky factor of the dampened inverse Hessian",
            "hessian": "2 X X^T summed over every calibration token, float32",
            "blocksize": p.blocksize,
            "percdamp": p.percdamp,
            "scope": "every nn.Linear inside the decoder layers (not embeddings, norms, lm_head)",
            **self._calib_config(),
            "prune_dtype": "float32",
            "batch_size": 1,
        }

    def material(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "kind": "sparsegpt-pruned",
            "prune_version": PRUNE_VERSION,
            "base_fingerprint": ctx.model_info["fingerprint"],
            "pattern": self.pattern,
            "n": self.n,
            "m": self.m,
            "sparsity": self.sparsity,
            "blocksize": self.params.blocksize,
            "percdamp": self.params.percdamp,
            **self._calib_material(ctx),
            "prune_dtype": "float32",
            "batch_size": 1,
        }

    def _run(self, model: Any, ids: Any, ctx: BuildContext) -> dict[str, Any]:
        from .sparsegpt import prune_sparsegpt_

        report = prune_sparsegpt_(model, ids, sparsity=None if self.m else self.sparsity, n=self.n, m=self.m,
                                  blocksize=self.params.blocksize, percdamp=self.params.percdamp,
                                  progress=self.settings.progress, batch_size=1)
        return report.to_dict()

    def notes(self, ctx: BuildContext) -> list[str]:
        return [
            f"{self.name}: pruned here with SparseGPT (Frantar & Alistarh 2023; our implementation, float32) on "
            f"{self.settings.calib_data} calibration text; the kept weights are updated, not only masked",
        ] + super().notes(ctx)


class Magnitude(_Pruner):
    method = "magnitude"
    label = "Magnitude"
    description = "magnitude pruning (smallest |W| per output row), unstructured or N:M, no calibration"
    calibrated = False

    def config(self) -> dict[str, Any]:
        return {
            "method": "magnitude",
            "pattern": self.pattern,
            "sparsity": self.sparsity,
            "comparison_group": self._group(),
            "score": "|W|",
            "scope": "every nn.Linear inside the decoder layers (not embeddings, norms, lm_head)",
            "calibration": None,
            "prune_dtype": "float32",
        }

    def material(self, ctx: BuildContext) -> dict[str, Any]:
        # no calibration: --calib-* settings do not change the pruned weights, so they are not in the key
        return {
            "kind": "magnitude-pruned",
            "prune_version": PRUNE_VERSION,
            "base_fingerprint": ctx.model_info["fingerprint"],
            "pattern": self.pattern,
            "n": self.n,
            "m": self.m,
            "sparsity": self.sparsity,
            "prune_dtype": "float32",
        }

    def _run(self, model: Any, ids: Any, ctx: BuildContext) -> dict[str, Any]:
        from .sparsegpt import prune_magnitude_

        return prune_magnitude_(model, sparsity=None if self.m else self.sparsity, n=self.n, m=self.m)

    def notes(self, ctx: BuildContext) -> list[str]:
        return [f"{self.name}: magnitude pruning reads no calibration data (--calib-* do not apply)"] + super().notes(ctx)


PRUNING_METHODS = ("wanda", "sparsegpt", "magnitude")
