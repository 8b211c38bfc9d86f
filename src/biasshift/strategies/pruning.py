"""Wanda pruning strategies: ``wanda`` (50% unstructured, per output row) and ``wanda-2:4``.

The base model is loaded in float32 on the run device, calibrated on ``--calib-samples`` windows of
``--calib-seqlen`` tokens (capped at ``max_position_embeddings``) drawn from ``--calib-data`` with the
run ``--seed`` (:func:`biasshift.calibration.load_calibration_ids`), pruned layer by layer
(:func:`.wanda.prune_wanda_`), and saved as a safetensors checkpoint in the variant cache
(:mod:`.varcache`).  Pruning only zeroes weights, so the checkpoint is stored in the base
checkpoint's own dtype without loss.  Every build, the first and the cached ones alike, loads that
checkpoint in the run dtype (or with a weight quantizer, for ``wanda+int8`` etc.).
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

from ..errors import BiasshiftError, ConfigError
from . import varcache
from .compose import BuildContext, Stage
from .measure import linear_report

#: bump when the pruning procedure changes in a way that changes the pruned weights
PRUNE_VERSION = 1


class CalibrationError(BiasshiftError):
    """The Wanda calibration data cannot be obtained or is unusable."""


def _checkpoint_dtype(path: Path) -> str:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return name if name in ("float32", "float16", "bfloat16") else "float32"


def _max_positions(path: Path) -> int | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for c in (cfg, cfg.get("text_config") or {}):
        v = c.get("max_position_embeddings")
        if isinstance(v, int) and v > 0:
            return v
    return None


class _Wanda(Stage):
    stage = "prune"
    n: ClassVar[int] = 0
    m: ClassVar[int] = 0
    sparsity: ClassVar[float] = 0.5

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}" if self.m else "unstructured"

    def config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "method": "wanda",
            "pattern": self.pattern,
            "sparsity": self.sparsity,
            "comparison_group": f"aligned blocks of {self.m} input columns per output row" if self.m else "per output row",
            "scope": "every nn.Linear inside the decoder layers (not embeddings, norms, lm_head)",
            "calib_data": s.calib_data,
            "calib_samples": s.calib_samples,
            "calib_seqlen": s.calib_seqlen,
            "seed": s.seed,
            "calib_text": "raw, no chat template, no special tokens",
            "prune_dtype": "float32",
            "batch_size": 1,
        }

    def validate(self) -> None:
        s = self.settings
        if s.calib_samples < 1 or s.calib_seqlen < 2:
            raise ConfigError("--calib-samples must be >= 1 and --calib-seqlen >= 2")
        if s.calib_data != "c4" and not Path(s.calib_data).expanduser().is_file():
            raise ConfigError(
                f"--calib-data {s.calib_data!r} is neither 'c4' nor an existing file (use a .txt file with "
                "blank-line separated documents or a .jsonl / .json.gz file with one {\"text\": ...} per line)"
            )

    # ---------------------------------------------------------------- cache key
    def _material(self, ctx: BuildContext) -> dict[str, Any]:
        from ..calibration import C4_FILENAME, C4_REPO_ID
        from ..data import sha256_file

        s = self.settings
        limit = _max_positions(ctx.base_path)
        seqlen = min(s.calib_seqlen, limit) if limit else s.calib_seqlen
        if s.calib_data == "c4":
            calib = {"source": "c4", "repo": C4_REPO_ID, "file": C4_FILENAME}
        else:
            p = Path(s.calib_data).expanduser()
            calib = {"source": "file", "sha256": sha256_file(p)}
        return {
            "kind": "wanda-pruned",
            "prune_version": PRUNE_VERSION,
            "base_fingerprint": ctx.model_info["fingerprint"],
            "pattern": self.pattern,
            "n": self.n,
            "m": self.m,
            "sparsity": self.sparsity,
            "calib": calib,
            "calib_samples": s.calib_samples,
            "calib_seqlen": seqlen,
            "seed": s.seed,
            "prune_dtype": "float32",
            "batch_size": 1,
        }

    # ---------------------------------------------------------------- stage hook
    def prepare(self, ctx: BuildContext) -> Path:
        material = self._material(ctx)
        key = varcache.variant_key(material)
        found = varcache.lookup(key)
        hit = found is not None
        if found is None:
            found = varcache.store(key, material, lambda tmp: self._prune_and_save(ctx, material, tmp))
        path, meta = found
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
        facts["calibration"] = meta.get("calibration")
        facts["prune_seconds"] = meta.get("prune_seconds")
        for w in meta.get("warnings", []):
            ctx.notes.append(f"{self.name}: {w}")
        return path

    def _prune_and_save(self, ctx: BuildContext, material: dict[str, Any], tmp: Path) -> dict[str, Any]:
        import torch
        from transformers import AutoModelForCausalLM

        from ..calibration import CalibrationDataError, load_calibration_ids
        from ..errors import ModelLoadError
        from .wanda import measure_sparsity, prune_wanda_

        s = self.settings
        t0 = time.perf_counter()
        ids, calib_meta = _calibration(ctx, material, s, load_calibration_ids, CalibrationDataError)
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
                report = prune_wanda_(
                    model,
                    ids,
                    sparsity=None if self.m else self.sparsity,
                    n=self.n,
                    m=self.m,
                    progress=s.progress,
                    batch_size=1,
                )
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
        model.to(save_dtype)  # exact: pruning only zeroes weights, the others keep their original values
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
            "report": {k: v for k, v in report.to_dict().items() if k != "layers"},
            "sparsity": {k: v for k, v in sp.items() if k != "modules"},
            "module_sparsity": {k: v["sparsity"] for k, v in sp["modules"].items()},
            "warnings": caught,
        }

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
        if self.m and dense:
            out["n_m_pattern_holds"] = _check_nm(model, self.n, self.m)
        return out

    def notes(self, ctx: BuildContext) -> list[str]:
        out = [
            f"{self.name}: pruned here with Wanda (spec §5.1) on {self.settings.calib_data} calibration text; the "
            "reference loaded the authors' pre-pruned checkpoints, whose calibration settings are unknown (spec §4.5)",
        ]
        if self.m:
            out.append(f"{self.name}: {self.pattern} semi-structured sparsity stored densely (no sparse kernels, no speed-up)")
        return out


def _calibration(ctx: BuildContext, material: dict[str, Any], s: Any, load: Any, data_error: type) -> tuple[Any, dict]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback warning is recorded from the metadata instead
            return load(
                ctx.tokenizer,
                source="c4" if s.calib_data == "c4" else str(Path(s.calib_data).expanduser()),
                nsamples=s.calib_samples,
                seqlen=material["calib_seqlen"],
                seed=s.seed,
            )
    except data_error as exc:
        raise CalibrationError(f"Wanda calibration data: {exc}") from None
    except ValueError as exc:
        raise CalibrationError(f"Wanda calibration settings: {exc}") from None


def _check_nm(model: Any, n: int, m: int) -> bool:
    from torch import nn

    from .measure import decoder_linears

    for _, mod in decoder_linears(model):
        if not isinstance(mod, nn.Linear):
            continue
        w = mod.weight.detach()
        if w.shape[1] % m:
            return False
        zeros = (w.reshape(w.shape[0], -1, m) == 0).sum(-1)
        if bool((zeros < n).any()):
            return False
    return True


class Wanda(_Wanda):
    name = "wanda"
    description = "Wanda pruning, 50% unstructured per output row, calibrated on --calib-data (cached on disk)"


class Wanda24(_Wanda):
    name = "wanda-2:4"
    description = "Wanda pruning, 2:4 semi-structured (50%), calibrated on --calib-data (cached on disk)"
    n = 2
    m = 4
