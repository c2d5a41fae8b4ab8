"""Parameter regions (study C): importance, selection, exact restoration, dimensions, freezing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_model

from brainalign.interventions.regions import (Region, block_index, block_matrices, continue_training, dimension_parameter,
                                              dimension_profile, language_importance, monolingual_region,
                                              parameter_importance, scale_region, select_region, token_chunks,
                                              zero_region)

IDS = torch.randint(0, 128, (40,), generator=torch.Generator().manual_seed(1))


def test_block_matrices_exclude_embeddings_head_and_vectors():
    model = tiny_model("llama")
    names = block_matrices(model)
    assert all(name.startswith("model.layers.") and p.ndim == 2 for name, p in names.items())
    assert len(names) == 3 * 7  # q k v o gate up down per layer
    assert "model.embed_tokens.weight" not in names and "lm_head.weight" not in names


def test_importance_equals_float64_hand_computation():
    model = tiny_model("llama")
    chunks = list(token_chunks(IDS, 16))  # 16, 16, 8 tokens
    importance = parameter_importance(model, chunks)
    reference = copy.deepcopy(model).double()
    params = {n: p for n, p in reference.named_parameters() if n in importance}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for chunk in chunks:
        logits = reference(input_ids=chunk[None]).logits[0, :-1]
        loss = torch.nn.functional.log_softmax(logits, -1).gather(1, chunk[1:, None]).mean().neg()
        grads = torch.autograd.grad(loss, list(params.values()))
        for (n, _), g in zip(params.items(), grads):
            total[n] += g
    for n, p in params.items():
        expected = (p.detach() * total[n]).abs() / len(chunks)
        torch.testing.assert_close(importance[n].double(), expected, rtol=2e-3, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_importance_with_a_prefix_in_eval_mode_summed_in_float32():
    """prefix_ids go before every chunk (Gemma's <bos>: the model's training inputs), as the
    float64 reference with the prefix prepended; dropout is off while scoring and the
    model's mode is restored; a bfloat16 model's gradients are summed in float32."""
    from brainalign.interventions.regions import _chunk_batch

    model = tiny_model("llama")
    chunks = list(token_chunks(IDS, 16))
    with_prefix = parameter_importance(model, chunks, prefix_ids=[5])
    reference = parameter_importance(model, [torch.cat([torch.tensor([5]), c]) for c in chunks])
    plain = parameter_importance(model, chunks)
    for name in with_prefix:
        torch.testing.assert_close(with_prefix[name], reference[name])
    assert any((with_prefix[n] - plain[n]).abs().max() > 1e-6 for n in plain)
    assert _chunk_batch(torch.tensor([[1, 2], [3, 4]]), torch.device("cpu"), (7, 8)).tolist() \
        == [[7, 8, 1, 2], [7, 8, 3, 4]]

    dropout = tiny_model("gpt2")  # GPT-2 blocks carry dropout (p = 0.1 in the config)
    dropout.config.resid_pdrop = dropout.config.attn_pdrop = dropout.config.embd_pdrop = 0.5
    for module in dropout.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    dropout.train()
    first = parameter_importance(dropout, chunks)
    second = parameter_importance(dropout, chunks)
    assert dropout.training  # restored
    for name in first:
        torch.testing.assert_close(first[name], second[name])

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    many = [IDS[i:i + 8] for i in range(0, 32)]  # 32 overlapping chunks
    got = parameter_importance(bf16, many)
    params = dict(bf16.named_parameters())
    total = {n: torch.zeros(params[n].shape, dtype=torch.float64) for n in got}
    for chunk in many:  # the same bfloat16 gradients, summed in float64
        bf16.zero_grad(set_to_none=True)
        bf16(input_ids=chunk[None], labels=chunk[None]).loss.backward()
        for n in got:
            total[n] += params[n].grad.double()
    bf16.zero_grad(set_to_none=True)
    for n in got:
        expected = (params[n].detach().double() * total[n]).abs() / len(many)
        torch.testing.assert_close(got[n].double(), expected, rtol=1e-4, atol=1e-9)


def test_control_dimension_is_the_lowest_index_at_the_median_count():
    from brainalign.interventions.regions import DimensionProfile

    assert DimensionProfile(np.array([5, 1, 1, 1, 1, 9]), 18).control_dimension() == 1
    assert DimensionProfile(np.full(6, 3), 18).control_dimension() == 0
    assert DimensionProfile(np.array([9, 4, 7, 2, 4]), 26).control_dimension() == 1


def test_select_region_same_counts_and_extremes():
    torch.manual_seed(0)
    scores = {"a": torch.rand(10, 30), "b": torch.rand(7, 9)}
    top, bottom, random = (select_region(scores, 0.05, which) for which in ("top", "bottom", "random"))
    assert top.counts() == bottom.counts() == random.counts() == {"a": 15, "b": 3}
    for key, score in scores.items():
        flat = score.reshape(-1)
        inside = torch.zeros_like(flat, dtype=torch.bool)
        inside[top.indices[key]] = True
        assert flat[inside].min() >= flat[~inside].max()
        inside[:] = False
        inside[bottom.indices[key]] = True
        assert flat[inside].max() <= flat[~inside].min()
    assert top.size == 18 and abs(top.fraction - 18 / 363) < 1e-12
    assert select_region(scores, 0.05, "random", seed=1).indices["a"].tolist() != random.indices["a"].tolist()


def test_zero_region_restores_exactly_also_on_exception(tmp_path):
    model = tiny_model("llama")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(input_ids=IDS[None]).logits
    scores = {n: p.detach().abs() for n, p in block_matrices(model).items()}
    region = select_region(scores, 0.1, "top")
    params = dict(model.named_parameters())
    with zero_region(model, region):
        for key, index in region.indices.items():
            assert torch.all(params[key].detach().reshape(-1)[index] == 0)
        with torch.no_grad():
            inside = model(input_ids=IDS[None]).logits
    assert not torch.allclose(inside, before)
    with pytest.raises(KeyError):
        with scale_region(model, region, 4.0):
            raise KeyError("inside")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS[None]).logits, before)
    region.save(tmp_path / "r.npz")
    loaded = Region.load(tmp_path / "r.npz")
    assert loaded.counts() == region.counts() and loaded.n_parameters == region.n_parameters
    assert all(torch.equal(loaded.indices[k], v) for k, v in region.indices.items())


def test_language_importance_total_and_monolingual_regions():
    model = tiny_model("llama")
    texts = {"xx": IDS[:20], "yy": IDS[20:], "zz": IDS.flip(0)[:20]}
    result = language_importance(model, texts, fraction=0.05, chunk_tokens=10)
    per_language = [parameter_importance(model, token_chunks(ids, 10)) for ids in texts.values()]
    for key in result.total:
        torch.testing.assert_close(result.total[key], sum(scores[key] for scores in per_language))
    mono = monolingual_region(result, "xx")
    own = result.language_top["xx"]
    for key, index in mono.indices.items():
        assert torch.isin(index, own.indices[key]).all()
        for other in ("yy", "zz"):
            assert not torch.isin(index, result.language_top[other].indices.get(key, torch.zeros(0))).any()
    assert 0 < mono.size < own.size
    assert result.n_tokens == {"xx": 20, "yy": 20, "zz": 20}


def test_dimension_profile_finds_a_planted_dimension():
    model = tiny_model("llama")
    params = block_matrices(model)
    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(0)) for n, p in params.items()}
    # Plant hidden dimension 7: input column 7 of q_proj (d_model in), output row 7 of o_proj.
    scores["model.layers.1.self_attn.q_proj.weight"][:, 7] += 10
    scores["model.layers.2.self_attn.o_proj.weight"][7, :] += 10
    region = select_region(scores, 0.05, "top")
    profile = dimension_profile(model, region)
    assert profile.top_dimensions(1)[0] == 7 and profile.concentration > 2
    control = profile.control_dimension()
    assert control != 7
    probe, twin = dimension_parameter(model, region, scores, 7, control)
    (key,) = probe.indices
    shape = params[key].shape
    row, col = np.unravel_index(int(probe.indices[key][0]), tuple(shape))
    twin_row, twin_col = np.unravel_index(int(twin.indices[key][0]), tuple(shape))
    if key.endswith("o_proj.weight"):
        assert (row, twin_row, col) == (7, control, twin_col)
    else:
        assert key.endswith("q_proj.weight") and (col, twin_col, row) == (7, control, twin_row)
    # restricted to one block, the probe comes from that block's planted matrix
    in_layer_1, _ = dimension_parameter(model, region, scores, 7, control, layer=1)
    assert list(in_layer_1.indices) == ["model.layers.1.self_attn.q_proj.weight"]
    assert block_index("model.layers.12.mlp.down_proj.weight") == 12
    assert block_index("lm_head.weight") is None
    with pytest.raises(ValueError, match="dimension 7 in block 9"):
        dimension_parameter(model, region, scores, 7, control, layer=9)


def test_frozen_region_survives_training_exactly():
    model = tiny_model("llama")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    scores = {n: p.detach().abs() for n, p in block_matrices(model).items()}
    region = select_region(scores, 0.05, "top")
    frozen = copy.deepcopy(model)
    losses = continue_training(frozen, token_chunks(IDS, 10), frozen=region, lr=1e-2)
    free = copy.deepcopy(model)
    continue_training(free, token_chunks(IDS, 10), frozen=None, lr=1e-2)
    assert len(losses) == 4 and all(np.isfinite(losses))
    frozen_params, free_params = dict(frozen.named_parameters()), dict(free.named_parameters())
    for key, index in region.indices.items():
        original = start[key].reshape(-1)
        assert torch.equal(frozen_params[key].detach().reshape(-1)[index], original[index])
        assert not torch.equal(free_params[key].detach().reshape(-1)[index], original[index])
        outside = torch.ones_like(original, dtype=torch.bool)
        outside[index] = False
        assert not torch.equal(frozen_params[key].detach().reshape(-1)[outside], original[outside])
    assert torch.equal(frozen.model.embed_tokens.weight, start["model.embed_tokens.weight"])
    assert not frozen.training
