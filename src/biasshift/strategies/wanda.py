"""Wanda pruning (pruning by Weights AND Activations), written from the algorithm description.

Score of weight ``W[i, j]`` of a linear layer::

    S[i, j] = |W[i, j]| * sqrt(a[j])

where ``a[j]`` is, for input channel ``j``, the mean over calibration samples of the squared L2
norm (over the sample's tokens) of the activations entering the layer.  Weights are compared
within one output row (unstructured) or within aligned blocks of ``m`` input columns of one row
(N:M), and the lowest scores are set to zero.

The model is pruned sequentially, one decoder layer at a time (docs/strategies.md, Wanda pruning):

1. the inputs of every decoder layer's first call are captured (hidden states of layer 0, plus
   every keyword argument each layer receives: attention mask, position ids, rotary
   ``position_embeddings``, ...);
2. for each decoder layer: statistics are collected on all ``nn.Linear`` modules inside it while
   the calibration samples go through the *unpruned* layer; all its linears are scored and
   pruned; then the samples go through the *pruned* layer and the outputs become the inputs of
   the next layer.

Embeddings, norms and ``lm_head`` are never touched.  Only dense ``nn.Linear`` weights are
supported (no already-quantised or offloaded/meta weights).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LayerwiseMethod",
    "WandaReport",
    "find_decoder_layers",
    "measure_sparsity",
    "prune_sequential_",
    "prune_wanda_",
    "wanda_prune_mask",
    "wanda_scores",
]

# Attribute paths (relative to the model passed in) where decoder layers are looked for, in order.
_DECODER_LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # LlamaForCausalLM, MistralForCausalLM, Qwen2/3ForCausalLM, Gemma*, Phi3, ...
    "model.language_model.layers",  # multimodal wrappers in transformers 5 (e.g. Mistral3, Gemma3)
    "layers",  # a bare base model (LlamaModel, ...)
)

# Keyword arguments whose captured value must not be reused across calls (a KV cache would grow).
_CACHE_KWARGS = ("past_key_values", "past_key_value", "layer_past")

# Unstructured masks are computed over row chunks of at most this many elements (bounds the
# memory of the sort: values + int64 indices).
_MASK_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------
# Scores and masks
# --------------------------------------------------------------------------------------------


def wanda_scores(weight: Tensor, act_sq_norm: Tensor) -> Tensor:
    """Return ``|W| * sqrt(act_sq_norm)`` (broadcast over output rows) in float32.

    ``weight`` has shape ``[out_features, in_features]``; ``act_sq_norm`` has shape
    ``[in_features]`` and holds, per input channel, the (mean over samples of the) squared L2
    norm of the activations.  The result lives on ``weight``'s device.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(weight.shape)}")
    if act_sq_norm.dim() != 1 or act_sq_norm.shape[0] != weight.shape[1]:
        raise ValueError(
            f"act_sq_norm must be 1-D with in_features={weight.shape[1]} entries, "
            f"got shape {tuple(act_sq_norm.shape)}"
        )
    act = act_sq_norm.detach().to(device=weight.device, dtype=torch.float32)
    if bool((act < 0).any()):
        raise ValueError("act_sq_norm must be non-negative (it is a mean of squared norms)")
    return weight.detach().to(torch.float32).abs() * act.sqrt().unsqueeze(0)


def _check_pattern(n: int, m: int) -> None:
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n == 0 and m == 0:
        return
    if not 0 < n < m:
        raise ValueError(
            f"invalid N:M pattern {n}:{m}: need 0 < n < m (e.g. n=2, m=4); use n=m=0 for unstructured pruning"
        )


def _check_sparsity(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return value


def _n_pruned_per_row(in_features: int, sparsity: float) -> int:
    # floor(in * sparsity); the tiny epsilon keeps e.g. 100 * 0.29 = 28.999999999999996 at 29.
    return min(in_features, int(math.floor(in_features * sparsity + 1e-9)))


def wanda_prune_mask(scores: Tensor, sparsity: float = 0.5, n: int = 0, m: int = 0) -> Tensor:
    """Boolean mask of the weights to prune (``True`` = set to zero).

    * Unstructured (``n == m == 0``): in every output row, exactly
      ``floor(in_features * sparsity)`` entries with the lowest scores are pruned.
    * N:M (``0 < n < m``): in every aligned group of ``m`` consecutive input columns of every row,
      the ``n`` lowest-scoring entries are pruned.  ``in_features`` must be divisible by ``m``.
      ``sparsity`` is ignored in this mode (the resulting sparsity is exactly ``n / m``).

    Ties are broken deterministically with a stable sort: among equal scores the entry with the
    lower column index is pruned first.  NaN scores sort as largest (kept).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [out_features, in_features], got shape {tuple(scores.shape)}")
    _check_pattern(n, m)
    out_features, in_features = scores.shape

    if m == 0:
        k = _n_pruned_per_row(in_features, _check_sparsity(sparsity))
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        if k == 0 or out_features == 0:
            return mask
        rows_per_chunk = max(1, _MASK_CHUNK_ELEMENTS // max(1, in_features))
        for start in range(0, out_features, rows_per_chunk):
            chunk = scores[start : start + rows_per_chunk]
            order = torch.sort(chunk, dim=1, stable=True).indices[:, :k]
            mask[start : start + rows_per_chunk].scatter_(1, order, True)
        return mask

    if in_features % m != 0:
        raise ValueError(
            f"N:M pruning {n}:{m} needs in_features divisible by m={m}, got in_features={in_features}"
        )
    groups = scores.reshape(out_features, in_features // m, m)
    order = torch.sort(groups, dim=2, stable=True).indices[:, :, :n]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    mask.scatter_(2, order, True)
    return mask.reshape(out_features, in_features)


# --------------------------------------------------------------------------------------------
# Model structure helpers
# --------------------------------------------------------------------------------------------


def _get_attr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return ``(attribute_path, layers)`` of the decoder layers of ``model``.

    Looks at ``model.model.layers`` (Llama / Mistral / Qwen style causal LMs),
    ``model.model.language_model.layers`` (transformers 5 multimodal wrappers) and
    ``model.layers`` (a bare base model).  Raises ``ValueError`` naming the model class otherwise.
    """
    for path in _DECODER_LAYER_PATHS:
        layers = _get_attr_path(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return path, layers
    tried = ", ".join(f"model.{p}" for p in _DECODER_LAYER_PATHS)
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}: looked for a non-empty "
        f"nn.ModuleList at {tried}. Only Llama/Mistral/Qwen-style decoder-only models are supported."
    )


def _layer_linears(layer: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, mod) for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)]


def _full_name(path: str, index: int, name: str) -> str:
    return f"{path}.{index}.{name}" if name else f"{path}.{index}"


def _count_zeros(weight: Tensor) -> tuple[int, int]:
    return int((weight == 0).sum().item()), int(weight.numel())


def measure_sparsity(model: nn.Module) -> dict[str, Any]:
    """Fraction of exactly-zero weights in the decoder's ``nn.Linear`` layers.

    Returns ``{"overall": float, "zeros": int, "total": int, "scope": str,
    "modules": {full_module_name: {"zeros": int, "total": int, "sparsity": float}}}``.
    Module names are the full names in ``model.named_modules()`` (e.g.
    ``model.layers.0.self_attn.q_proj``).  Works on any model: when no decoder layers are found,
    every ``nn.Linear`` except the output embeddings (``lm_head``) is measured and ``scope`` says
    so.  Only meaningful for dense (not packed/quantised) weights.
    """
    modules: dict[str, dict[str, Any]] = {}
    try:
        path, layers = find_decoder_layers(model)
    except ValueError:
        path, layers = None, None

    if layers is not None:
        scope = "decoder_linear"
        items = [
            (_full_name(path, i, name), mod) for i, layer in enumerate(layers) for name, mod in _layer_linears(layer)
        ]
    else:
        scope = "all_linear_except_output_embeddings"
        output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        items = [
            (name, mod)
            for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and mod is not output_embeddings
        ]

    zeros_total = numel_total = 0
    with torch.no_grad():
        for name, mod in items:
            zeros, total = _count_zeros(mod.weight)
            modules[name] = {"zeros": zeros, "total": total, "sparsity": zeros / total if total else 0.0}
            zeros_total += zeros
            numel_total += total
    return {
        "overall": zeros_total / numel_total if numel_total else 0.0,
        "zeros": zeros_total,
        "total": numel_total,
        "scope": scope,
        "modules": modules,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class WandaReport:
    """What :func:`prune_wanda_` did.

    ``layers`` maps the full module name of every pruned ``nn.Linear`` (same names as
    :func:`measure_sparsity`) to ``(zeros, total)`` after pruning.  ``sparsity`` is the target
    ratio that was applied (``n / m`` for N:M patterns).
    """

    layers: dict[str, tuple[int, int]]
    overall_sparsity: float
    zeros: int
    total: int
    sparsity: float
    n: int
    m: int
    pattern: str
    calib_shape: tuple[int, int]
    batch_size: int
    seconds: float
    num_decoder_layers: int
    model_class: str
    uncalibrated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable representation."""
        data = asdict(self)
        data["layers"] = {k: list(v) for k, v in self.layers.items()}
        data["calib_shape"] = list(self.calib_shape)
        return data


# --------------------------------------------------------------------------------------------
# Sequential pruning
# --------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised from a forward pre-hook to abort the model forward once inputs are captured."""


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _layer_device(layer: nn.Module, fallback: torch.device) -> torch.device:
    for p in layer.parameters():
        return p.device
    return fallback


def _hidden_from_output(out: Any) -> Tensor:
    # transformers 5 decoder layers return a Tensor; older versions returned a tuple.
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"unexpected decoder layer output type {type(out).__name__}")


@dataclass
class _LayerCall:
    """Everything except the hidden states that one decoder layer received in its forward."""

    extra_args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _capture_inputs(
    model: nn.Module, layers: nn.ModuleList, calib_ids: Tensor, batch_size: int
) -> tuple[list[Tensor], dict[int, list[_LayerCall]]]:
    """Capture decoder-layer inputs for all calibration mini-batches.

    Returns the hidden states entering layer 0 (one tensor per mini-batch) and, per mini-batch
    size, the non-hidden arguments that *each* decoder layer receives.  The latter are recorded
    once per distinct mini-batch size with a forward that runs up to the last layer's pre-hook
    (some models pass different masks / rotary embeddings to different layers, e.g. sliding vs
    full attention); every other mini-batch is stopped at layer 0.  Reuse across mini-batches of
    the same size is valid because the calibration inputs have no padding and equal length.
    """
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    input_device = emb.weight.device if emb is not None else next(model.parameters()).device
    num_layers = len(layers)

    state: dict[str, Any] = {}

    def make_hook(idx: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if args:
                hidden, extra = args[0], tuple(args[1:])
                kw = dict(kwargs)
            elif "hidden_states" in kwargs:
                kw = dict(kwargs)
                hidden, extra = kw.pop("hidden_states"), ()
            else:
                raise RuntimeError(f"decoder layer {idx} was called without hidden states")
            if idx == 0:
                state["hidden"] = hidden.detach()
            if state["record"] is not None:
                for key in _CACHE_KWARGS:
                    if key in kw:
                        kw[key] = None
                if "use_cache" in kw:
                    kw["use_cache"] = False
                state["record"][idx] = _LayerCall(extra, kw)
            if idx == state["stop_at"]:
                raise _StopForward

        return hook

    handles = [layer.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    hidden_batches: list[Tensor] = []
    calls_by_size: dict[int, list[_LayerCall]] = {}
    try:
        for start in range(0, calib_ids.shape[0], batch_size):
            ids = calib_ids[start : start + batch_size].to(input_device)
            size = ids.shape[0]
            record = None if size in calls_by_size else [None] * num_layers
            state.update(record=record, stop_at=num_layers - 1 if record is not None else 0, hidden=None)
            try:
                model(input_ids=ids, use_cache=False)
            except _StopForward:
                pass
            else:
                raise RuntimeError("the model forward finished without reaching the decoder layers")
            if state["hidden"] is None or (record is not None and any(r is None for r in record)):
                raise RuntimeError(
                    f"could not capture the inputs of every decoder layer of {type(model).__name__}"
                )
            hidden_batches.append(state["hidden"])
            if record is not None:
                calls_by_size[size] = record
    finally:
        for h in handles:
            h.remove()
        state.clear()
    return hidden_batches, calls_by_size


@contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(label)``; uses rich, else tqdm, else nothing."""
    rich_progress = tqdm = None
    if enabled:
        try:
            import rich.progress as rich_progress
        except ImportError:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
    if rich_progress is not None:
        with rich_progress.Progress(
            rich_progress.TextColumn("[progress.description]{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.MofNCompleteColumn(),
            rich_progress.TimeElapsedColumn(),
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda label: bar.update(task, advance=1, description=f"{description} ({label})")
    elif tqdm is not None:
        bar = tqdm(total=total, desc=description)
        try:
            yield lambda label: (bar.set_postfix_str(label), bar.update(1))
        finally:
            bar.close()
    else:
        yield lambda label: None


class LayerwiseMethod:
    """One pruning method inside :func:`prune_sequential_`: per-linear statistics on the unpruned layer's
    inputs, then an in-place pruning of the linear from them.  Wanda keeps squared input norms,
    SparseGPT the Hessian ``2 X X^T`` (:mod:`.sparsegpt`)."""

    def new_stats(self, mod: nn.Linear) -> Any:
        raise NotImplementedError

    def add(self, stats: Any, x: Tensor) -> Any:
        """Accumulate the inputs ``x`` (float32, ``[tokens, in_features]``); return the updated stats."""
        raise NotImplementedError

    def prune(self, name: str, mod: nn.Linear, stats: Any, nsamples: int) -> None:
        """Prune ``mod.weight`` in place from the stats gathered over ``nsamples`` calibration samples."""
        raise NotImplementedError


@dataclass
class SequentialResult:
    layers: dict[str, tuple[int, int]]
    uncalibrated: list[str]
    num_decoder_layers: int


def prune_sequential_(
    model: nn.Module,
    calib_ids: Tensor,
    method: LayerwiseMethod,
    *,
    label: str,
    progress: bool = False,
    batch_size: int = 1,
    check_in_features: int = 0,
    pattern: str = "",
) -> SequentialResult:
    """The layer-by-layer pass shared by the calibrated pruning methods (module docstring, steps 1-2).

    ``check_in_features`` > 0 refuses (ValueError, before anything is modified) a linear whose
    in_features is not a multiple of it (N:M patterns)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(calib_ids, Tensor) or calib_ids.dim() != 2 or calib_ids.numel() == 0:
        shape = tuple(calib_ids.shape) if isinstance(calib_ids, Tensor) else type(calib_ids).__name__
        raise ValueError(f"calib_ids must be a non-empty LongTensor [nsamples, seqlen], got {shape}")
    if calib_ids.dtype != torch.long:
        raise ValueError(f"calib_ids must have dtype torch.long, got {calib_ids.dtype}")

    path, layers = find_decoder_layers(model)
    layer_linears = [_layer_linears(layer) for layer in layers]
    if check_in_features:
        for i, linears in enumerate(layer_linears):
            for name, mod in linears:
                if mod.in_features % check_in_features:
                    raise ValueError(
                        f"N:M pruning {pattern} needs in_features divisible by m={check_in_features}, but "
                        f"{_full_name(path, i, name)} has in_features={mod.in_features}"
                    )

    report_layers: dict[str, tuple[int, int]] = {}
    uncalibrated: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            hidden, calls_by_size = _capture_inputs(model, layers, calib_ids, batch_size)
            fallback_device = hidden[0].device
            with _progress(progress, len(layers), label) as advance:
                for li, layer in enumerate(layers):
                    device = _layer_device(layer, fallback_device)
                    calls = {
                        size: _to_device((rec[li].extra_args, rec[li].kwargs), device)
                        for size, rec in calls_by_size.items()
                    }

                    def run(h: Tensor, layer: nn.Module = layer, device: torch.device = device,
                            calls: dict[int, Any] = calls) -> Tensor:
                        extra, kw = calls[h.shape[0]]
                        return _hidden_from_output(layer(h.to(device), *extra, **kw))

                    # 1) statistics on the unpruned layer
                    linears = layer_linears[li]
                    stats = {name: method.new_stats(mod) for name, mod in linears}
                    seen = {name: 0 for name, _ in linears}

                    def make_stat_hook(name: str, in_features: int, stats: dict[str, Any],
                                       seen: dict[str, int]) -> Callable[..., None]:
                        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
                            x = inputs[0].detach().reshape(-1, in_features).to(torch.float32)
                            stats[name] = method.add(stats[name], x)
                            seen[name] += 1

                        return hook

                    handles = [mod.register_forward_hook(make_stat_hook(name, mod.in_features, stats, seen))
                               for name, mod in linears]
                    nsamples = 0
                    try:
                        for h in hidden:
                            run(h)
                            nsamples += h.shape[0]
                    finally:
                        for handle in handles:
                            handle.remove()

                    # 2) prune every linear of this layer
                    for name, mod in linears:
                        full_name = _full_name(path, li, name)
                        if seen[name] == 0:
                            uncalibrated.append(full_name)
                        method.prune(full_name, mod, stats[name], nsamples)
                        report_layers[full_name] = _count_zeros(mod.weight)

                    # 3) the pruned layer's outputs are the next layer's inputs
                    for b in range(len(hidden)):
                        hidden[b] = run(hidden[b])
                    advance(f"layer {li + 1}/{len(layers)}")
    finally:
        model.train(was_training)
    return SequentialResult(report_layers, uncalibrated, len(layers))


class _WandaMethod(LayerwiseMethod):
    def __init__(self, target: float, n: int, m: int) -> None:
        self.target, self.n, self.m = target, n, m

    def new_stats(self, mod: nn.Linear) -> Tensor:
        return torch.zeros(mod.in_features, dtype=torch.float64, device=mod.weight.device)

    def add(self, stats: Tensor, x: Tensor) -> Tensor:
        stats += (x * x).sum(dim=0).to(torch.float64)
        return stats

    def prune(self, name: str, mod: nn.Linear, stats: Tensor, nsamples: int) -> None:
        scores = wanda_scores(mod.weight, stats / nsamples)
        mask = wanda_prune_mask(scores, self.target, self.n, self.m)
        mod.weight.masked_fill_(mask, 0)


def prune_wanda_(
    model: nn.Module,
    calib_ids: Tensor,
    sparsity: float | None = None,
    n: int = 0,
    m: int = 0,
    progress: bool = True,
    batch_size: int = 1,
) -> WandaReport:
    """Prune every ``nn.Linear`` inside the decoder layers of ``model`` in place with Wanda.

    ``calib_ids`` is a ``LongTensor[nsamples, seqlen]`` (see
    :func:`biasshift.calibration.load_calibration_ids`).  ``sparsity`` is the per-row pruning
    ratio for unstructured pruning (``None`` = 0.5).  ``n``/``m`` select N:M semi-structured
    sparsity: ``sparsity`` is then not used, ``n / m`` is applied and reported, and a
    ``UserWarning`` is emitted when an explicit ``sparsity`` disagrees with ``n / m``.

    Samples are processed in mini-batches of ``batch_size`` (``use_cache=False``, no padding).
    Embeddings, norms and ``lm_head`` are left untouched.  The model's train/eval mode is
    restored afterwards.  Raises ``ValueError`` for invalid arguments or an unsupported model
    before anything is modified.
    """
    t0 = time.perf_counter()
    target, pattern = resolve_target(sparsity, n, m)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(calib_ids, Tensor) or calib_ids.dim() != 2 or calib_ids.numel() == 0:
        shape = tuple(calib_ids.shape) if isinstance(calib_ids, Tensor) else type(calib_ids).__name__
        raise ValueError(f"calib_ids must be a non-empty LongTensor [nsamples, seqlen], got {shape}")
    if calib_ids.dtype != torch.long:
        raise ValueError(f"calib_ids must have dtype torch.long, got {calib_ids.dtype}")
    find_decoder_layers(model)
    res = prune_sequential_(
        model, calib_ids, _WandaMethod(target, n, m), label=f"Wanda {pattern}", progress=progress,
        batch_size=batch_size, check_in_features=m, pattern=pattern,
    )
    return finish_report(model, calib_ids, res, target, n, m, pattern, batch_size, t0)


def resolve_target(sparsity: float | None, n: int, m: int) -> tuple[float, str]:
    """(applied sparsity, pattern name); warns when an explicit sparsity disagrees with N:M (ValueError if invalid)."""
    _check_pattern(n, m)
    if m == 0:
        return _check_sparsity(0.5 if sparsity is None else sparsity), "unstructured"
    target = n / m
    pattern = f"{n}:{m}"
    if sparsity is not None and not (
        isinstance(sparsity, (int, float)) and math.isclose(float(sparsity), target, abs_tol=1e-9)
    ):
        warnings.warn(
            f"sparsity={sparsity!r} is ignored for {pattern} pruning; the applied sparsity is {target:g}",
            UserWarning,
            stacklevel=3,
        )
    return target, pattern


def finish_report(
    model: nn.Module, calib_ids: Tensor, res: SequentialResult, target: float, n: int, m: int, pattern: str,
    batch_size: int, t0: float,
) -> WandaReport:
    if res.uncalibrated:
        warnings.warn(
            "these linear layers never ran on the calibration data and were pruned on zero statistics "
            f"(lowest column indices first): {', '.join(res.uncalibrated)}",
            UserWarning,
            stacklevel=3,
        )
    zeros = sum(z for z, _ in res.layers.values())
    total = sum(t for _, t in res.layers.values())
    return WandaReport(
        layers=res.layers,
        overall_sparsity=zeros / total if total else 0.0,
        zeros=zeros,
        total=total,
        sparsity=target,
        n=n,
        m=m,
        pattern=pattern,
        calib_shape=(int(calib_ids.shape[0]), int(calib_ids.shape[1])),
        batch_size=batch_size,
        seconds=time.perf_counter() - t0,
        num_decoder_layers=res.num_decoder_layers,
        model_class=type(model).__name__,
        uncalibrated=res.uncalibrated,
    )
