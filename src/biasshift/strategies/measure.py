"""What a variant's linear layers actually hold: storage bits per weight, zero fraction, module types.

Used by every strategy to fill ``Variant.info["measured"]``.  Only the linear layers inside the
decoder layers are counted (embeddings, norms and ``lm_head`` are never quantized or pruned);
linear layers outside them are listed by name.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import nn

from .wanda import find_decoder_layers


def _bnb_types() -> tuple[type | None, type | None]:
    # a model can only hold bitsandbytes layers once bitsandbytes is imported: never import it just to look
    # (its import logs kernel-loading warnings on CPU, noise for every run that does not use it)
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return None, None
    try:
        return bnb.nn.Linear8bitLt, bnb.nn.Linear4bit
    except AttributeError:  # a partially imported / broken bitsandbytes
        return None, None


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size()) if isinstance(t, torch.Tensor) else 0


def _module_stats(mod: nn.Module, int8_cls: type | None, four_cls: type | None) -> tuple[str, int, int, int | None]:
    """(kind, logical number of weights, storage bytes incl. scales, number of exact zeros or None)."""
    if int8_cls is not None and isinstance(mod, int8_cls):
        w = mod.weight
        storage = _nbytes(w.data) + _nbytes(getattr(w, "SCB", None))
        return "bnb_int8", int(w.numel()), storage, int((w.data == 0).sum())
    if four_cls is not None and isinstance(mod, four_cls):
        w = mod.weight
        qs = getattr(w, "quant_state", None)
        if qs is None:  # not quantized yet (meta / offloaded)
            return "bnb_4bit", int(w.numel()) * 2, _nbytes(w.data), None
        n = int(math.prod(qs.shape))
        storage = _nbytes(w.data) + _nbytes(qs.absmax)
        if getattr(qs, "nested", False) and qs.state2 is not None:
            storage += _nbytes(qs.state2.absmax) + _nbytes(qs.offset)
        zeros = None
        try:
            import bitsandbytes.functional as F

            zeros = int((F.dequantize_4bit(w.data, qs) == 0).sum())
        except Exception:
            pass
        return f"bnb_{qs.quant_type}", n, storage, zeros
    packed = getattr(mod, "weight_packed", None)
    if isinstance(packed, torch.Tensor):  # compressed-tensors, still compressed
        shape = getattr(mod, "weight_shape", None)
        n = int(math.prod(shape.tolist())) if isinstance(shape, torch.Tensor) else int(packed.numel()) * 8
        storage = _nbytes(packed) + _nbytes(getattr(mod, "weight_scale", None)) + _nbytes(
            getattr(mod, "weight_zero_point", None)
        )
        return "compressed_tensors", n, storage, None
    w = getattr(mod, "weight", None)
    if isinstance(w, torch.Tensor):
        if w.is_floating_point():
            return "dense", int(w.numel()), _nbytes(w), int((w == 0).sum())
        # integer container (e.g. compressed-tensors naive-quantized): values are codes, not weights
        storage = _nbytes(w) + _nbytes(getattr(mod, "weight_scale", None)) + _nbytes(
            getattr(mod, "weight_zero_point", None)
        )
        return f"{str(w.dtype).removeprefix('torch.')}_codes", int(w.numel()), storage, None
    return type(mod).__name__, 0, 0, None


def decoder_linears(model: nn.Module) -> list[tuple[str, nn.Module]]:
    try:
        path, layers = find_decoder_layers(model)
    except ValueError:
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not out]
    return [
        (f"{path}.{i}.{n}", m)
        for i, layer in enumerate(layers)
        for n, m in layer.named_modules()
        if isinstance(m, nn.Linear) or hasattr(m, "weight_packed")
    ]


def linear_report(model: nn.Module) -> dict[str, Any]:
    """Summary over the decoder's linear layers.

    ``bits_per_weight`` = storage of the weights and their per-block scales / zero points (not the
    shared 16-entry 4-bit code books, not biases) in bits, divided by the logical number of weights.
    ``zero_fraction`` = exact zeros / weights (``None`` when a packed format cannot be inspected).
    """
    int8_cls, four_cls = _bnb_types()
    with torch.no_grad():
        items = decoder_linears(model)
        kinds: dict[str, int] = {}
        n_total = storage_total = zeros_total = 0
        zeros_known = True
        for _, mod in items:
            kind, n, storage, zeros = _module_stats(mod, int8_cls, four_cls)
            kinds[kind] = kinds.get(kind, 0) + 1
            n_total += n
            storage_total += storage
            if zeros is None:
                zeros_known = False
            else:
                zeros_total += zeros
    inside = {id(m) for _, m in items}
    outside = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in inside]
    return {
        "n_linear": len(items),
        "linear_types": kinds,
        "n_weights": n_total,
        "bits_per_weight": round(8 * storage_total / n_total, 4) if n_total else None,
        "zero_fraction": (zeros_total / n_total if n_total else None) if zeros_known else None,
        "linear_outside_decoder_layers": outside,
    }


def zero_report(model: nn.Module, n: int = 0, m: int = 0) -> dict[str, Any]:
    """Exact zeros of every dense decoder linear (per layer and overall) and, for an N:M pattern (``n``
    pruned of every aligned group of ``m`` input weights of a row), how the groups look.

    ``n_m_pattern_holds``: every group has at least ``n`` zeros (at most ``m - n`` nonzeros, what sparse
    kernels need); ``n_m_groups_exact``: every group has exactly ``n`` zeros (more means the weight was
    already zero). Linears that are not dense float tensors are listed in ``not_inspected``."""
    per: dict[str, float] = {}
    zeros_total = n_total = 0
    skipped: list[str] = []
    groups = groups_ok = groups_exact = 0
    with torch.no_grad():
        for name, mod in decoder_linears(model):
            w = getattr(mod, "weight", None)
            if not isinstance(mod, nn.Linear) or not isinstance(w, torch.Tensor) or not w.is_floating_point():
                skipped.append(name)
                continue
            z = int((w == 0).sum())
            per[name] = z / w.numel() if w.numel() else 0.0
            zeros_total += z
            n_total += int(w.numel())
            if m:
                if w.shape[1] % m:
                    skipped.append(name)
                    continue
                gz = (w.reshape(w.shape[0], -1, m) == 0).sum(-1)
                groups += int(gz.numel())
                groups_ok += int((gz >= n).sum())
                groups_exact += int((gz == n).sum())
    out: dict[str, Any] = {
        "zero_fraction": zeros_total / n_total if n_total else None,
        "zeros": zeros_total,
        "n_weights_inspected": n_total,
        "zero_fraction_per_linear": per,
    }
    if skipped:
        out["not_inspected"] = skipped
    if m:
        out["n_m_groups"] = groups
        out["n_m_pattern_holds"] = bool(groups and groups_ok == groups and not skipped)
        out["n_m_groups_exact"] = bool(groups and groups_exact == groups and not skipped)
        out["n_m_groups_with_exactly_n_zeros_fraction"] = groups_exact / groups if groups else None
    return out
