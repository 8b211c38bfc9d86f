"""``awq`` and ``gptq``: load a pre-quantized checkpoint that the user names.

A checkpoint is given with ``--strategy-checkpoint awq=PATH_OR_HUB_ID[@REVISION]``.  (``awq@w4g128``,
``gptq@w4g64``, ... build one from the base model with llmcompressor in its own environment and then
load it through this same path: :mod:`.llmc`.)


* ``compressed-tensors`` checkpoints (what llmcompressor writes) load everywhere, CPU included,
  with ``compressed-tensors==0.20.0`` (extra ``biasshift[checkpoints]``);
* AutoAWQ (``quant_method: awq``) and AutoGPTQ/GPTQModel (``quant_method: gptq``) checkpoints load
  through transformers' own loaders, which need ``gptqmodel`` (GPU builds only).

Fused AWQ layers are never used: transformers 5 has no fused-module mode for AWQ, and
compressed-tensors runs plain linear layers (spec §4.3).  The checkpoint's
``quantization_config`` (and, when present, llmcompressor's ``recipe.yaml``) is recorded.
The prompts are tokenized with the *base* model's tokenizer, like every other variant.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError, DependencyError, ModelLoadError
from ..models import ModelSpec, materialise
from .compose import BuildContext, CheckpointStage
from .measure import linear_report

REFERENCE_AWQ = (
    "ai-and-society/llama-2-7b-chat-hf-awq",
    "ai-and-society/llama-3.1-8B-Instruct-awq",
    "ai-and-society/mistral-7B-Instruct-v0.3-awq",
)
_CT_INSTALL = "install it with `pip install compressed-tensors==0.20.0` (biasshift's optional extra 'checkpoints')"
#: config.json fields that must agree between the base model and a quantization of it
_SAME = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def split_ref(ref: str) -> tuple[str, str | None]:
    """``hub/id@revision`` -> (id, revision); local paths are returned as they are."""
    if Path(ref).expanduser().exists() or "@" not in ref:
        return ref, None
    ident, rev = ref.rsplit("@", 1)
    return ident, rev or None


def _howto(name: str) -> str:
    method = "AWQ" if name == "awq" else "GPTQ"
    ref = (
        f" The reference's AWQ checkpoints (AutoAWQ format, spec §1.3) are {', '.join(REFERENCE_AWQ)}; they load "
        "only where gptqmodel can be installed (GPU)."
        if name == "awq"
        else ""
    )
    return (
        f"strategy {name} loads a pre-quantized {method} checkpoint: pass --strategy-checkpoint {name}=PATH_OR_HUB_ID "
        "(a compressed-tensors checkpoint written by llmcompressor, a local directory or a hub id, optionally "
        f"@revision).{ref} To build one here from the base model instead, name the setting: {name}@w4g128 "
        f"(4 bits, group size 128), {name}@w4g64, {name}@w8g128 (llmcompressor in its own environment, "
        "`make llmc-env`; docs/strategies.md, 'GPTQ and AWQ built by biasshift')"
    )


def _require(method: str, strategy: str, ref: str) -> None:
    if method == "compressed-tensors":
        if importlib.util.find_spec("compressed_tensors") is None:
            raise DependencyError(
                f"strategy {strategy}: checkpoint {ref} is in compressed-tensors format (llmcompressor output), "
                f"which needs the compressed-tensors package; {_CT_INSTALL}"
            )
        return
    missing = [m for m in (("gptqmodel", "optimum") if method == "gptq" else ("gptqmodel",))
               if importlib.util.find_spec(m) is None]
    if missing:
        fmt = "AutoAWQ" if method == "awq" else "AutoGPTQ/GPTQModel"
        raise DependencyError(
            f"strategy {strategy}: checkpoint {ref} is in {fmt} format (quant_method '{method}'); transformers loads "
            f"it only through {' and '.join(missing)} (`pip install {' '.join(missing)}`), which needs a CUDA build "
            "of torch >= 2.14.1, so it cannot run on CPU. Alternatively quantize the base model with llmcompressor "
            "(compressed-tensors output, loads on CPU too): see docs/strategies.md"
        )


def asym_packed(qc: dict[str, Any]) -> bool:
    """Whether a compressed-tensors ``quantization_config`` stores asymmetric weights pack-quantized."""
    for group in (qc.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") or {}
        fmt = (group or {}).get("format") or qc.get("format")
        if fmt == "pack-quantized" and weights.get("symmetric") is False:
            return True
    return False


def fix_ct_packed_zero_points() -> bool:
    """Let compressed-tensors load asymmetric pack-quantized checkpoints; True when it can (now or already).

    compressed-tensors 0.20.0, preparing a model to receive a pack-quantized checkpoint (weights on the meta
    device), packs ``weight_packed`` but leaves ``weight_zero_point`` at its unpacked shape
    ``[out_features, groups]``, while the checkpoint holds the zero points packed along dim 0
    (``[ceil(out_features * bits / 32), groups]``, int32; its own ``compress`` writes them so and its
    ``decompress`` unpacks them so). transformers then refuses the size mismatch. The fix gives the meta zero
    point the packed shape; decompression is compressed-tensors' own. Probed, not version-matched: it is
    installed only when the probe shows the unpacked shape, so a fixed compressed-tensors is left alone.
    Tested against an independent dequantization of the stored tensors (tests/test_llmc.py).
    """
    import math

    import torch
    from compressed_tensors.compressors.pack_quantized import base as pq
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    cls = pq.PackedQuantizationCompressor
    if getattr(cls, "_biasshift_zero_point_fix", False):
        return True
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=4, type="int", strategy="group", group_size=8, symmetric=False))

    def probe() -> tuple[int, ...]:
        sd = {"weight": torch.empty(16, 16, device="meta"), "weight_scale": torch.empty(16, 2, device="meta"),
              "weight_zero_point": torch.empty(16, 2, dtype=torch.int8, device="meta")}
        return tuple(cls.compress(sd, scheme)["weight_zero_point"].shape)

    try:
        if probe() == (2, 2):
            return True  # already packed correctly
        original = cls.compress.__func__

        def compress(klass: Any, state_dict: Any, scheme: Any) -> Any:
            out = original(klass, state_dict, scheme)
            w = scheme.weights
            zp, packed = out.get("weight_zero_point"), out.get("weight_packed")
            if (zp is not None and packed is not None and packed.device.type == "meta" and w is not None
                    and not w.symmetric and w.strategy in pq.PACK_ZP_STRATS and zp.shape[0] == packed.shape[0]):
                rows = math.ceil(zp.shape[0] * w.num_bits / 32)
                out["weight_zero_point"] = torch.empty((rows, *zp.shape[1:]), dtype=torch.int32, device="meta")
            return out

        cls.compress = classmethod(compress)
        cls._biasshift_zero_point_fix = True
        if probe() == (2, 2):
            return True
        cls.compress = classmethod(original)
        cls._biasshift_zero_point_fix = False
    except Exception:
        return False
    return False


def _check_ct_loadable(qc: dict[str, Any], strategy: str, ref: str) -> None:
    """compressed-tensors 0.20.0 cannot load asymmetric pack-quantized checkpoints (it sizes the packed zero
    points as unpacked while loading, and transformers refuses the mismatch); catch that before loading.
    (Checkpoints built by biasshift load through :func:`fix_ct_packed_zero_points` instead.)"""
    import importlib.metadata

    try:
        version = importlib.metadata.version("compressed-tensors")
    except importlib.metadata.PackageNotFoundError:
        return
    if version != "0.20.0":
        return
    for group in (qc.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") or {}
        fmt = (group or {}).get("format") or qc.get("format")
        if fmt == "pack-quantized" and weights.get("symmetric") is False:
            raise ConfigError(
                f"strategy {strategy}: checkpoint {ref} stores asymmetric 4-bit weights in the pack-quantized format, "
                "which compressed-tensors 0.20.0 cannot load (packed zero points). Save it in the naive-quantized "
                "format instead: the script in docs/strategies.md does that by default (--format naive-quantized)"
            )


def _read_recipe(path: Path, source_kind: str, ident: str, revision: str | None) -> str | None:
    f = path / "recipe.yaml"
    if f.is_file():
        return f.read_text(errors="replace")
    if source_kind != "hub":
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=ident, filename="recipe.yaml", revision=revision)).read_text(errors="replace")
    except Exception:
        return None


class _Checkpoint(CheckpointStage):
    modifier: ClassVar[str]

    def ref(self) -> str | None:
        return self.settings.checkpoints.get(self.name)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "checkpoint": self.ref(),
            "fused_layers": False,
            "tokenizer": "the base model's",
        }

    def validate(self) -> None:
        if not self.ref():
            raise ConfigError(_howto(self.name))

    def prepare(self, ctx: BuildContext) -> Path:
        ref = self.ref()
        if not ref:
            raise ConfigError(_howto(self.name))
        return self.prepare_checkpoint(ctx, ref)

    def prepare_checkpoint(self, ctx: BuildContext, ref: str, *, built: bool = False) -> Path:
        """Check and record the checkpoint ``ref`` (hub id[@rev] or directory); return its local directory.

        ``built``: made by biasshift (:mod:`.llmc`): asymmetric pack-quantized weights then load through
        :func:`fix_ct_packed_zero_points`."""
        ident, rev = split_ref(ref)
        if ident.lower().endswith(".gguf"):
            raise ConfigError(f"strategy {self.name}: {ref} is a GGUF file, not an {self.method.upper()} checkpoint")
        path, info = materialise(ModelSpec(ident, rev, trust_remote_code=ctx.spec.trust_remote_code))
        try:
            raw = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"strategy {self.name}: cannot read {path / 'config.json'}: {exc}") from None
        qc = raw.get("quantization_config")
        if not isinstance(qc, dict):
            raise ConfigError(
                f"strategy {self.name}: checkpoint {ref} is not quantized (its config.json has no quantization_config)"
            )
        method = str(qc.get("quant_method", "")).lower()
        if method not in ("compressed-tensors", "awq", "gptq"):
            raise ConfigError(
                f"strategy {self.name}: checkpoint {ref} uses quant_method {method!r}; expected compressed-tensors "
                f"(llmcompressor) or {self.method}"
            )
        if method in ("awq", "gptq") and method != self.method:
            raise ConfigError(
                f"strategy {self.name}: checkpoint {ref} is a {method.upper()} checkpoint; pass it as "
                f"--strategy-checkpoint {method}={ref}"
            )
        _require(method, self.name, ref)
        if method == "compressed-tensors":
            if built and asym_packed(qc):
                if not fix_ct_packed_zero_points():
                    raise ConfigError(
                        f"strategy {self.name}: this compressed-tensors cannot load the asymmetric pack-quantized "
                        f"checkpoint {ref} that biasshift built (packed zero points); install "
                        "compressed-tensors==0.20.0 (biasshift's extra 'checkpoints')"
                    )
            else:
                _check_ct_loadable(qc, self.name, ref)
        self._check_same_model(ctx, raw, ref)
        recipe = _read_recipe(path, info["source_kind"], ident, info.get("revision"))
        modifiers = sorted(set(re.findall(r"\b([A-Z][A-Za-z0-9]*Modifier)\b", recipe))) if recipe else []
        if method == "compressed-tensors":
            if not recipe:
                ctx.notes.append(
                    f"{self.name}: the checkpoint has no recipe.yaml, so biasshift cannot check that it was made "
                    f"with {self.method.upper()} (the label {self.name} is the user's)"
                )
            elif self.modifier not in modifiers:
                ctx.notes.append(
                    f"{self.name}: the checkpoint's recipe.yaml lists {', '.join(modifiers) or 'no modifiers'}, not "
                    f"{self.modifier}"
                )
        ctx.resolved.setdefault(self.name, {}).update(
            checkpoint_id=ident,
            checkpoint_revision=info.get("revision") or rev,
            checkpoint_path=str(path),
            checkpoint_fingerprint=info["fingerprint"],
            checkpoint_format=method,
        )
        ctx.facts.setdefault(self.name, {}).update(
            checkpoint_quantization_config=qc,
            recipe_modifiers=modifiers,
            recipe=recipe,
        )
        return path

    def _check_same_model(self, ctx: BuildContext, raw: dict[str, Any], ref: str) -> None:
        try:
            base = json.loads((ctx.base_path / "config.json").read_text())
        except (OSError, ValueError):
            return
        diffs = [f"{k}: base {base[k]!r}, checkpoint {raw[k]!r}" for k in _SAME if k in base and k in raw and base[k] != raw[k]]
        if diffs:
            raise ConfigError(
                f"strategy {self.name}: checkpoint {ref} is not a quantization of the base model {ctx.spec.source} "
                f"({'; '.join(diffs)})"
            )

    def measure(self, model: Any, ctx: BuildContext) -> dict[str, Any]:
        return linear_report(model)

    def notes(self, ctx: BuildContext) -> list[str]:
        out = [
            f"{self.name}: weights come from a pre-quantized checkpoint (recorded in config / measured); fused "
            "layers are off (spec §4.3) and prompts use the base model's tokenizer",
        ]
        if ctx.resolved.get(self.name, {}).get("checkpoint_format") == "compressed-tensors":
            out.append(
                f"{self.name}: compressed-tensors decompresses the packed weights to the run dtype on the first "
                "forward (quantized values, dense compute); memory_footprint_bytes is measured before that"
            )
        return out


class AWQ(_Checkpoint):
    method = "awq"
    description = "a pre-quantized AWQ checkpoint (--strategy-checkpoint awq=...; llmcompressor or AutoAWQ format)"
    modifier = "AWQModifier"


class GPTQ(_Checkpoint):
    method = "gptq"
    description = "a pre-quantized GPTQ checkpoint (--strategy-checkpoint gptq=...; llmcompressor or GPTQ format)"
    modifier = "GPTQModifier"
