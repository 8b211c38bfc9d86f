"""SparseGPT (Frantar & Alistarh 2023) and magnitude pruning, written from the papers' descriptions.

**SparseGPT** prunes one linear layer ``W`` (``[rows, cols]``) so that ``W X`` stays close to the
unpruned output on the calibration inputs ``X`` (``[cols, tokens]``), with the optimal brain surgeon
update of the weights that are kept:

* Hessian ``H = 2 X X^T`` summed over every calibration token (float32), dampened by
  ``percdamp`` (1%) of the mean of its diagonal; input columns that never saw a nonzero input
  (``H_jj = 0``) get ``H_jj = 1`` and their weights are pruned (they cannot matter);
* ``U`` = the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``). Row ``j`` of ``U`` divided by
  ``U_jj`` is row ``j`` of the inverse Hessian of the columns ``j..`` still free, so processing the
  columns left to right, fixing column ``j`` to ``q_j`` and updating the free columns
  ``W[:, j:] -= ((w_j - q_j) / U_jj) U[j, j:]`` is the OBS update of each step;
* columns are processed in blocks of ``blocksize`` (128); updates inside a block are applied at
  once per column, and the block's accumulated error is propagated to the later columns;
* mask selection by the OBS saliency ``w^2 / U_jj^2``: unstructured, at the start of each block and
  per output row (on the weights as updated so far), the lowest-saliency weights are chosen so that
  after column ``c`` exactly ``floor(c * sparsity)`` weights of the row are pruned (the row total is
  ``floor(cols * sparsity)``, the count Wanda and magnitude prune per row); N:M, for each aligned
  group of ``M`` columns, when its first column is reached, the ``N`` lowest-saliency weights of the
  group in each row (on the updated weights).

The layer-by-layer pass (calibration inputs captured before layer 0, statistics on the unpruned
layer, inputs of the next layer from the pruned one) is :func:`.wanda.prune_sequential_`.

**Magnitude** needs no calibration: in each output row the ``floor(cols * sparsity)`` weights of
smallest ``|W|`` are pruned (N:M: the ``N`` smallest of each aligned group of ``M`` in a row), with
the same tie rule and mask function as Wanda (:func:`.wanda.wanda_prune_mask` on ``|W|``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from .wanda import (
    LayerwiseMethod,
    WandaReport,
    _count_zeros,
    _full_name,
    _layer_linears,
    _n_pruned_per_row,
    find_decoder_layers,
    finish_report,
    prune_sequential_,
    resolve_target,
    wanda_prune_mask,
)

__all__ = ["prune_magnitude_", "prune_sparsegpt_", "sparsegpt_prune_weight"]


def _lowest_per_row(scores: Tensor, k: Tensor | int) -> Tensor:
    """Mask of the ``k`` lowest scores per row (stable: lower column first among ties)."""
    order = torch.sort(scores, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks < k


def sparsegpt_prune_weight(
    weight: Tensor,
    hessian: Tensor,
    sparsity: float = 0.5,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> Tensor:
    """The SparseGPT-pruned copy of ``weight`` (float32) given the Hessian ``2 X X^T`` of its inputs.

    ``n``/``m`` > 0 select N:M (``sparsity`` then unused; ``blocksize`` is rounded down to a
    multiple of ``m``). Raises ValueError for a singular dampened Hessian or bad shapes."""
    if weight.dim() != 2 or hessian.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"hessian must be [in, in] = {weight.shape[1]}^2, got {tuple(hessian.shape)}")
    W = weight.detach().to(torch.float32).clone()
    H = hessian.detach().to(torch.float32).clone()
    rows, cols = W.shape
    if m and cols % m:
        raise ValueError(f"N:M pruning {n}:{m} needs in_features divisible by m={m}, got {cols}")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols, device=H.device)
    H[idx, idx] += damp
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.cholesky_inverse(L)
        U = torch.linalg.cholesky(Hinv, upper=True)
    except RuntimeError as exc:  # torch.linalg.LinAlgError is a RuntimeError
        raise ValueError(f"the dampened Hessian is not positive definite ({exc})") from None
    bs = max(m, (blocksize // m) * m) if m else max(1, blocksize)
    k_row = _n_pruned_per_row(cols, sparsity) if not m else 0
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        if m:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            k_block = _n_pruned_per_row(i2, sparsity) - _n_pruned_per_row(i1, sparsity)
            k_block = min(k_block, k_row)
            mask1 = _lowest_per_row(W1**2 / d.unsqueeze(0) ** 2, k_block)
        for i in range(count):
            w = W1[:, i]
            if m and i % m == 0:
                sal = W1[:, i : i + m] ** 2 / d[i : i + m].unsqueeze(0) ** 2
                mask1[:, i : i + m] = _lowest_per_row(sal, n)
            q = w.clone()
            q[mask1[:, i]] = 0.0
            Q1[:, i] = q
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        if i2 < cols:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


class _SparseGPTMethod(LayerwiseMethod):
    def __init__(self, target: float, n: int, m: int, blocksize: int, percdamp: float) -> None:
        self.target, self.n, self.m, self.blocksize, self.percdamp = target, n, m, blocksize, percdamp

    def new_stats(self, mod: nn.Linear) -> Tensor:
        return torch.zeros(mod.in_features, mod.in_features, dtype=torch.float32, device=mod.weight.device)

    def add(self, stats: Tensor, x: Tensor) -> Tensor:
        stats.addmm_(x.T, x, alpha=2.0)
        return stats

    def prune(self, name: str, mod: nn.Linear, stats: Tensor, nsamples: int) -> None:
        try:
            new = sparsegpt_prune_weight(mod.weight, stats, self.target, self.n, self.m, self.blocksize, self.percdamp)
        except ValueError as exc:
            raise ValueError(f"SparseGPT on {name}: {exc}") from None
        mod.weight.copy_(new.to(mod.weight.dtype))


def prune_sparsegpt_(
    model: nn.Module,
    calib_ids: Tensor,
    sparsity: float | None = None,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    progress: bool = False,
    batch_size: int = 1,
) -> WandaReport:
    """Prune every ``nn.Linear`` inside the decoder layers of ``model`` in place with SparseGPT
    (module docstring); arguments and report as :func:`.wanda.prune_wanda_`."""
    t0 = time.perf_counter()
    target, pattern = resolve_target(sparsity, n, m)
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive int, got {blocksize!r}")
    if not (isinstance(percdamp, (int, float)) and math.isfinite(percdamp) and percdamp >= 0):
        raise ValueError(f"percdamp must be a finite number >= 0, got {percdamp!r}")
    res = prune_sequential_(
        model, calib_ids, _SparseGPTMethod(target, n, m, blocksize, float(percdamp)), label=f"SparseGPT {pattern}",
        progress=progress, batch_size=batch_size, check_in_features=m, pattern=pattern,
    )
    return finish_report(model, calib_ids, res, target, n, m, pattern, batch_size, t0)


def prune_magnitude_(model: nn.Module, sparsity: float | None = None, n: int = 0, m: int = 0) -> dict[str, Any]:
    """Prune every ``nn.Linear`` inside the decoder layers in place by ``|W|`` (module docstring).

    Returns ``{"layers": {name: [zeros, total]}, "overall_sparsity", "sparsity", "pattern", "seconds"}``."""
    t0 = time.perf_counter()
    target, pattern = resolve_target(sparsity, n, m)
    path, layers = find_decoder_layers(model)
    items = [(_full_name(path, i, name), mod) for i, layer in enumerate(layers) for name, mod in _layer_linears(layer)]
    if m:
        for name, mod in items:
            if mod.in_features % m:
                raise ValueError(
                    f"N:M pruning {pattern} needs in_features divisible by m={m}, but {name} has "
                    f"in_features={mod.in_features}"
                )
    out: dict[str, list[int]] = {}
    with torch.no_grad():
        for name, mod in items:
            mask = wanda_prune_mask(mod.weight.detach().to(torch.float32).abs(), target, n, m)
            mod.weight.masked_fill_(mask, 0)
            out[name] = list(_count_zeros(mod.weight))
    zeros = sum(z for z, _ in out.values())
    total = sum(t for _, t in out.values())
    return {
        "layers": out,
        "overall_sparsity": zeros / total if total else 0.0,
        "zeros": zeros,
        "total": total,
        "sparsity": target,
        "pattern": pattern,
        "num_decoder_layers": len(layers),
        "seconds": time.perf_counter() - t0,
    }
