"""Tests for biasshift.strategies.wanda."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from biasshift.strategies.wanda import (
    WandaReport,
    _capture_inputs,
    find_decoder_layers,
    measure_sparsity,
    prune_wanda_,
    wanda_prune_mask,
    wanda_scores,
)

T, F = True, False


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


class ToyModel(nn.Module):
    """Embedding -> plain layers (no residual, no norm); ``layers`` is found by find_decoder_layers."""

    def __init__(self, embeddings: torch.Tensor, layers: list[nn.Module]):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(embeddings.float(), freeze=True)
        self.layers = nn.ModuleList(layers)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids, use_cache=False):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        return h


def linear(weight) -> nn.Linear:
    w = torch.tensor(weight, dtype=torch.float32)
    mod = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        mod.weight.copy_(w)
    return mod


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval()


def calib(nsamples: int = 4, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (nsamples, seqlen), generator=g)


def decoder_linears(model):
    path, layers = find_decoder_layers(model)
    return {
        f"{path}.{i}.{name}": mod
        for i, layer in enumerate(layers)
        for name, mod in layer.named_modules()
        if isinstance(mod, nn.Linear)
    }


def collect_stats(model, layer_idx: int, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference statistic via hooks during an ordinary full-model forward of all samples."""
    _, layers = find_decoder_layers(model)
    sums, handles = {}, []
    for name, mod in layers[layer_idx].named_modules():
        if isinstance(mod, nn.Linear):
            sums[name] = torch.zeros(mod.in_features, dtype=torch.float64)

            def hook(module, inputs, output, name=name):
                x = inputs[0].reshape(-1, module.in_features).double()
                sums[name] += (x * x).sum(0)

            handles.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return {name: s / ids.shape[0] for name, s in sums.items()}


# ------------------------------------------------------------------------------------------
# (a) exact sparsity of the masks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_features,sparsity", [(16, 0.5), (10, 0.5), (7, 0.5), (100, 0.29), (12, 0.0), (9, 0.9)])
def test_unstructured_mask_prunes_exactly_floor_per_row(in_features, sparsity):
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (13, in_features), generator=g).float()  # many ties
    mask = wanda_prune_mask(scores, sparsity)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    expected = math.floor(in_features * sparsity + 1e-9)
    assert (mask.sum(dim=1) == expected).all()
    # the pruned entries are never above the kept ones in their row
    for row_scores, row_mask in zip(scores, mask):
        if 0 < expected < in_features:
            assert row_scores[row_mask].max() <= row_scores[~row_mask].min()


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_prunes_n_in_every_aligned_group(n, m):
    scores = torch.rand(6, 32, generator=torch.Generator().manual_seed(1))
    mask = wanda_prune_mask(scores, n=n, m=m)
    assert (mask.reshape(6, 32 // m, m).sum(dim=2) == n).all()


# ------------------------------------------------------------------------------------------
# (b) hand-computed masks, end to end through prune_wanda_ (statistics from hand-made inputs)
# ------------------------------------------------------------------------------------------


def test_hand_example_2x4_unstructured():
    # two tokens; per-channel sum of squares = [9+16, 1, 4, 1/16] -> norms [5, 1, 2, 0.25]
    x = torch.tensor([[3.0, 1.0, 2.0, 0.25], [4.0, 0.0, 0.0, 0.0]])
    w = [[1.0, 2.0, 3.0, 4.0], [0.5, -3.0, 2.0, -8.0]]
    # row 0 scores [5, 2, 6, 1]   -> prune cols 3, 1   (|W| alone would prune cols 0, 1)
    # row 1 scores [2.5, 3, 4, 2] -> prune cols 3, 0   (|W| alone would prune cols 0, 2)
    expected = torch.tensor([[F, T, F, T], [T, F, F, T]])
    assert torch.equal(wanda_prune_mask(torch.tensor(w).abs(), 0.5), torch.tensor([[T, T, F, F], [T, F, T, F]]))

    model = ToyModel(x, [linear(w)])
    report = prune_wanda_(model, torch.tensor([[0, 1]]), sparsity=0.5, progress=False)
    pruned = model.layers[0].weight
    assert torch.equal(pruned == 0, expected)
    assert torch.equal(pruned[~expected], torch.tensor(w)[~expected])  # kept weights untouched
    assert report.layers == {"layers.0": (4, 8)}


HAND_W_3x8 = [
    [4.0, -3.0, 1.5, 0.9, 0.5, -1.0, 1.2, 5.0],
    [1.0, -1.0, 1.0, -1.0, 0.2, 0.3, -0.5, 2.0],
    [8.0, 3.0, -2.0, 1.0, 1.0, -1.0, 1.0, 1.0],
]
HAND_X_3x8 = [[1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0]]  # one token: norms = |x|
# scores |W| * norm:
#   row 0: [4, 6, 4.5, 3.6 | 2, 3, 2.4, 5]
#   row 1: [1, 2, 3, 4     | 0.8, 0.9, 1.0, 2]
#   row 2: [8, 6, 6, 4     | 4, 3, 2, 1]        (exact ties 6/6 and 4/4: lower column pruned first)
HAND_2_4 = torch.tensor(
    [
        [T, F, F, T, T, F, T, F],  # |W| alone: [F, F, T, T, T, T, F, F]
        [T, T, F, F, T, T, F, F],
        [F, T, F, T, F, F, T, T],  # |W| alone (ties -> lowest index): [F, F, T, T, T, T, F, F]
    ]
)
HAND_UNSTRUCTURED = torch.tensor(
    [
        [F, F, F, T, T, T, T, F],
        [T, F, F, F, T, T, T, F],  # tie 1.0 (col 0) vs 1.0 (col 6): both among the 4 lowest
        [F, F, F, T, F, T, T, T],  # tie 4 (col 3) vs 4 (col 4): col 3 pruned
    ]
)


@pytest.mark.parametrize("n,m,expected", [(2, 4, HAND_2_4), (0, 0, HAND_UNSTRUCTURED)])
def test_hand_example_3x8(n, m, expected):
    w = torch.tensor(HAND_W_3x8)
    act = torch.tensor(HAND_X_3x8[0]) ** 2
    assert torch.equal(wanda_prune_mask(wanda_scores(w, act), 0.5, n, m), expected)

    model = ToyModel(torch.tensor(HAND_X_3x8), [linear(HAND_W_3x8)])
    prune_wanda_(model, torch.tensor([[0], [0]]), sparsity=0.5, n=n, m=m, progress=False)
    assert torch.equal(model.layers[0].weight == 0, expected)


def test_wanda_scores_formula():
    w = torch.tensor([[-2.0, 3.0], [0.5, -1.0]], dtype=torch.bfloat16)
    s = wanda_scores(w, torch.tensor([4.0, 9.0], dtype=torch.float64))
    assert s.dtype == torch.float32
    assert torch.equal(s, torch.tensor([[4.0, 9.0], [1.0, 3.0]]))


# ------------------------------------------------------------------------------------------
# (c) tiny Llama
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m", [(0, 0), (2, 4)])
def test_tiny_llama_pruning(n, m):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linears = decoder_linears(model)
    assert len(linears) == 14

    report = prune_wanda_(model, calib(), sparsity=0.5, n=n, m=m, progress=(n == 0))
    assert isinstance(report, WandaReport)

    for name, mod in linears.items():
        zeros = mod.weight == 0
        if m:
            groups = zeros.reshape(mod.out_features, mod.in_features // m, m)
            assert (groups.sum(dim=2) == n).all(), name
        else:
            assert (zeros.sum(dim=1) == mod.in_features // 2).all(), name
    linear_weights = {f"{name}.weight" for name in linears}
    for key, value in model.state_dict().items():
        if key not in linear_weights:  # embeddings, norms, lm_head
            assert torch.equal(value, before[key]), key

    with torch.no_grad():
        logits = model(calib(2, 8, seed=1)).logits
    assert logits.shape == (2, 8, 128) and torch.isfinite(logits).all()

    measured = measure_sparsity(model)
    assert measured["scope"] == "decoder_linear"
    assert set(measured["modules"]) == set(report.layers) == set(linears)
    for name, (zeros, total) in report.layers.items():
        assert (zeros, total) == (measured["modules"][name]["zeros"], measured["modules"][name]["total"])
    assert report.overall_sparsity == measured["overall"] == 0.5
    assert (report.zeros, report.total) == (measured["zeros"], measured["total"])
    assert report.calib_shape == (4, 16) and report.num_decoder_layers == 2
    assert report.pattern == ("2:4" if m else "unstructured") and report.sparsity == 0.5
    assert report.to_dict()["layers"]["model.layers.0.self_attn.q_proj"] == [2048, 4096]


# ------------------------------------------------------------------------------------------
# (d) sequential semantics
# ------------------------------------------------------------------------------------------


def test_sequential_hand_built_two_layers():
    # one token x = [1, 1]
    # layer 0 W0 = [[1, 2], [2, 1.5]]: unpruned output [3, 3.5]; pruned (keep col 1 / col 0) -> [2, 2]
    # layer 1 W1 = [[1, 0.95]]:
    #   statistics from the PRUNED layer 0  -> scores [2, 1.9]   -> prune col 1  (expected)
    #   statistics from the unpruned layer 0 -> scores [3, 3.325] -> would prune col 0
    model = ToyModel(torch.tensor([[1.0, 1.0]]), [linear([[1.0, 2.0], [2.0, 1.5]]), linear([[1.0, 0.95]])])
    prune_wanda_(model, torch.tensor([[0]]), sparsity=0.5, progress=False)
    assert torch.equal(model.layers[0].weight, torch.tensor([[0.0, 2.0], [2.0, 0.0]]))
    assert torch.equal(model.layers[1].weight, torch.tensor([[1.0, 0.0]]))


def test_sequential_matches_manual_reference_on_llama():
    ids = calib()
    original = tiny_llama()
    pruned = copy.deepcopy(original)
    prune_wanda_(pruned, ids, progress=False)
    pruned_linears = decoder_linears(pruned)

    reference = copy.deepcopy(original)
    _, ref_layers = find_decoder_layers(reference)
    for li in range(2):
        stats = collect_stats(reference, li, ids)  # layer li sees the already pruned layers < li
        for name, mod in ref_layers[li].named_modules():
            if isinstance(mod, nn.Linear):
                expected = wanda_prune_mask(wanda_scores(mod.weight, stats[name]), 0.5)
                got = pruned_linears[f"model.layers.{li}.{name}"].weight == 0
                assert torch.equal(got, expected), (li, name)
                with torch.no_grad():
                    mod.weight.masked_fill_(expected, 0)

    # the check is discriminative: statistics of the UNPRUNED model give other layer-1 masks
    stats_unpruned = collect_stats(original, 1, ids)
    differs = 0
    for name, mod in find_decoder_layers(original)[1][1].named_modules():
        if isinstance(mod, nn.Linear):
            naive = wanda_prune_mask(wanda_scores(mod.weight, stats_unpruned[name]), 0.5)
            differs += int((naive != (pruned_linears[f"model.layers.1.{name}"].weight == 0)).sum())
    assert differs > 0


def test_batch_size_does_not_change_masks():
    ids = calib(5, 12)
    a, b = tiny_llama(), tiny_llama()
    prune_wanda_(a, ids, progress=False, batch_size=1)
    prune_wanda_(b, ids, progress=False, batch_size=2)  # mini-batches of 2, 2, 1
    for (name, ma), mb in zip(decoder_linears(a).items(), decoder_linears(b).values()):
        assert torch.equal(ma.weight == 0, mb.weight == 0), name


def _final_hidden(model, ids):
    """Input of the final norm in an ordinary forward."""
    captured = {}
    handle = model.model.norm.register_forward_pre_hook(lambda mod, args: captured.setdefault("h", args[0]))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    handle.remove()
    return captured["h"]


def test_captured_per_layer_kwargs_reproduce_forward_with_sliding_window_layers():
    # Qwen2 with sliding-window layers passes a different attention mask to layers 2 and 3.
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=2,
    )
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).eval()
    ids = calib(2, 12)
    _, layers = find_decoder_layers(model)
    with torch.no_grad():
        hidden, calls = _capture_inputs(model, layers, ids, batch_size=2)
        h_own, h_layer0_kwargs = hidden[0], hidden[0]
        for i, layer in enumerate(layers):
            h_own = layer(h_own, *calls[2][i].extra_args, **calls[2][i].kwargs)
            h_layer0_kwargs = layer(h_layer0_kwargs, *calls[2][0].extra_args, **calls[2][0].kwargs)
    expected = _final_hidden(model, ids)
    torch.testing.assert_close(h_own, expected)
    assert not torch.allclose(h_layer0_kwargs, expected)  # reusing layer 0's arguments would be wrong
    report = prune_wanda_(model, ids, progress=False)
    assert report.overall_sparsity == 0.5


# ------------------------------------------------------------------------------------------
# (e) determinism
# ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_masks():
    a, b = tiny_llama(seed=3), tiny_llama(seed=3)
    prune_wanda_(a, calib(seed=5), progress=False, n=2, m=4)
    prune_wanda_(b, calib(seed=5), progress=False, n=2, m=4)
    for (name, ma), mb in zip(decoder_linears(a).items(), decoder_linears(b).values()):
        assert torch.equal(ma.weight, mb.weight), name


def test_different_calibration_changes_masks():
    a, b = tiny_llama(), tiny_llama()
    prune_wanda_(a, calib(seed=0), progress=False)
    prune_wanda_(b, calib(seed=1), progress=False)
    assert any(not torch.equal(ma.weight, mb.weight) for ma, mb in zip(decoder_linears(a).values(), decoder_linears(b).values()))


# ------------------------------------------------------------------------------------------
# (f) validation
# ------------------------------------------------------------------------------------------


def test_mask_validation_errors():
    scores = torch.rand(2, 6)
    with pytest.raises(ValueError, match="divisible by m=4"):
        wanda_prune_mask(scores, n=2, m=4)
    with pytest.raises(ValueError, match="0 < n < m"):
        wanda_prune_mask(scores, n=3, m=3)
    with pytest.raises(ValueError, match="0 < n < m"):
        wanda_prune_mask(scores, n=2, m=0)
    with pytest.raises(ValueError, match="0 < n < m"):
        wanda_prune_mask(scores, n=0, m=2)
    for bad in (1.0, 1.5, -0.1, float("nan"), "0.5", None):
        with pytest.raises(ValueError, match="sparsity"):
            wanda_prune_mask(scores, bad)
    with pytest.raises(ValueError, match="2-D"):
        wanda_prune_mask(torch.rand(6))
    with pytest.raises(ValueError, match="in_features=6"):
        wanda_scores(torch.rand(2, 6), torch.rand(5))
    with pytest.raises(ValueError, match="non-negative"):
        wanda_scores(torch.rand(2, 2), torch.tensor([1.0, -1.0]))


def test_prune_validation_errors():
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"divisible by m=3, but model\.layers\.0\.self_attn\.q_proj"):
        prune_wanda_(model, calib(), n=2, m=3, progress=False)
    with pytest.raises(ValueError, match="sparsity"):
        prune_wanda_(model, calib(), sparsity=1.2, progress=False)
    with pytest.raises(ValueError, match="calib_ids"):
        prune_wanda_(model, torch.randint(0, 128, (16,)), progress=False)
    with pytest.raises(ValueError, match="torch.long"):
        prune_wanda_(model, calib().float(), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        prune_wanda_(model, calib(), batch_size=0, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing was modified
    with pytest.raises(ValueError, match="Sequential"):
        prune_wanda_(nn.Sequential(nn.Linear(4, 4)), calib(), progress=False)


def test_nm_ignores_sparsity_with_warning():
    model = tiny_llama()
    with pytest.warns(UserWarning, match="ignored for 2:4"):
        report = prune_wanda_(model, calib(2, 8), sparsity=0.3, n=2, m=4, progress=False)
    assert report.sparsity == 0.5 and report.overall_sparsity == 0.5


def test_nm_default_sparsity_is_n_over_m_without_warning(recwarn):
    report = prune_wanda_(tiny_llama(), calib(2, 8), n=1, m=4, progress=False)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert report.sparsity == 0.25 and report.overall_sparsity == 0.25 and report.pattern == "1:4"


def test_measure_sparsity_without_decoder_layers():
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
    result = measure_sparsity(model)
    assert result["scope"] == "all_linear_except_output_embeddings"
    assert result["modules"]["0"] == {"zeros": 8, "total": 8, "sparsity": 1.0}
    assert result["zeros"] == 8 and result["total"] == 12
