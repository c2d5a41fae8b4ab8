"""Neuron sites across transformers families: every site of every layer checked against the
unhooked model.

Each family is a tiny randomly initialised model (2-3 layers, d_model 32) built from its
config, so no download is needed. For every family the recorded ``resid`` equals the
model's own ``output_hidden_states`` and the sites add up to the residual update the way
the family's block adds them (pre-LN, parallel attention, sandwich norm, post-LN); the
feed-forward units pushed through the down projection give ``mlp.out``; declared layouts
are checked against a forward pass.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brainalign.models.sites import (
    SITE_NAMES,
    UnsupportedModelError,
    block_list,
    check_layout,
    load_layout,
    resolve_sites,
    site_hooks,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TOLERANCE = 1e-5
D_MODEL, FFN, VOCAB = 32, 48, 128
N_EXPERTS, EXPERT_FFN = 4, 16


def tiny_config(family: str):
    """A small config of the family (no download)."""
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=3,
                  num_attention_heads=4, intermediate_size=FFN, max_position_embeddings=64)
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    gqa = dict(num_key_value_heads=2, **common, **ids)
    gpt = dict(vocab_size=VOCAB, n_embd=D_MODEL, n_layer=3, n_head=4, n_positions=64,
               bos_token_id=1, eos_token_id=2)
    falcon = dict(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=3,
                  num_attention_heads=4, ffn_hidden_size=FFN, **ids)
    makers = {
        "llama": lambda: tf.LlamaConfig(**gqa),
        "mistral": lambda: tf.MistralConfig(sliding_window=None, **gqa),
        "qwen2": lambda: tf.Qwen2Config(**gqa),
        "qwen3": lambda: tf.Qwen3Config(head_dim=8, **gqa),
        "olmo": lambda: tf.OlmoConfig(**gqa),
        "olmo2": lambda: tf.Olmo2Config(**gqa),
        "gemma2": lambda: tf.Gemma2Config(head_dim=8, sliding_window=8, **gqa),
        "gemma3": lambda: tf.Gemma3TextConfig(head_dim=8, sliding_window=8, **gqa),
        "phi": lambda: tf.PhiConfig(**common, **ids),
        "phi3": lambda: tf.Phi3Config(**gqa),
        "gpt2": lambda: tf.GPT2Config(**gpt),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**common, **ids),
        "gpt_neox_sequential": lambda: tf.GPTNeoXConfig(use_parallel_residual=False, **common, **ids),
        "gptj": lambda: tf.GPTJConfig(rotary_dim=4, n_inner=FFN, **gpt),
        "opt": lambda: tf.OPTConfig(ffn_dim=FFN, word_embed_proj_dim=D_MODEL, **{
            k: v for k, v in common.items() if k != "intermediate_size"}, **ids),
        "opt_post_ln": lambda: tf.OPTConfig(ffn_dim=FFN, word_embed_proj_dim=D_MODEL,
                                            do_layer_norm_before=False, **{
            k: v for k, v in common.items() if k != "intermediate_size"}, **ids),
        "falcon": lambda: tf.FalconConfig(**falcon),
        "falcon_new": lambda: tf.FalconConfig(num_kv_heads=2, new_decoder_architecture=True,
                                              **falcon),
        "mixtral": lambda: tf.MixtralConfig(num_local_experts=N_EXPERTS, num_experts_per_tok=2,
                                            **{**gqa, "intermediate_size": EXPERT_FFN}),
        "qwen3_moe": lambda: tf.Qwen3MoeConfig(num_experts=N_EXPERTS, num_experts_per_tok=2,
                                               moe_intermediate_size=EXPERT_FFN, head_dim=8,
                                               mlp_only_layers=[1], **gqa),
        "bert": lambda: tf.BertConfig(**common, pad_token_id=0),
        "roberta": lambda: tf.RobertaConfig(**common, **ids),
        "xlm_roberta": lambda: tf.XLMRobertaConfig(**common, **ids),
        "electra": lambda: tf.ElectraConfig(embedding_size=D_MODEL, **common, pad_token_id=0),
        "distilbert": lambda: tf.DistilBertConfig(vocab_size=VOCAB, dim=D_MODEL, n_layers=3, n_heads=4,
                                                  hidden_dim=FFN, max_position_embeddings=64, pad_token_id=0),
        "mpnet": lambda: tf.MPNetConfig(**common, **ids),
        "modernbert": lambda: tf.ModernBertConfig(cls_token_id=1, sep_token_id=2, local_attention=8,
                                                  global_attn_every_n_layers=2, **common, **ids),
    }
    return makers[family]()


ENCODERS = ("bert", "roberta", "xlm_roberta", "electra", "distilbert", "mpnet", "modernbert")
MOE = ("mixtral", "qwen3_moe")

#: How the block adds its sites to the residual stream:
#: pre: resid - prev = attn.out + mlp.out (sequential pre-LN and parallel attention);
#: sandwich: resid - prev = post_attention_layernorm(attn.out) + mlp.out;
#: post: resid = norm2(mlp.out + norm1(attn.out + prev)), with (norm1, norm2) below.
SANDWICH = ("olmo2", "gemma2", "gemma3")
POST_LN_NORMS = {
    "bert": ("attention.output.LayerNorm", "output.LayerNorm"),
    "roberta": ("attention.output.LayerNorm", "output.LayerNorm"),
    "xlm_roberta": ("attention.output.LayerNorm", "output.LayerNorm"),
    "electra": ("attention.output.LayerNorm", "output.LayerNorm"),
    "mpnet": ("attention.LayerNorm", "output.LayerNorm"),
    "distilbert": ("sa_layer_norm", "output_layer_norm"),
    "opt_post_ln": ("self_attn_layer_norm", "final_layer_norm"),
}
#: The norm the model applies to the last block's output in hidden_states[-1], if any.
FINAL_NORM = {
    "olmo2": "model.norm", "gemma2": "model.norm", "gemma3": "model.norm", "llama": "model.norm",
    "mistral": "model.norm", "qwen2": "model.norm", "qwen3": "model.norm", "olmo": "model.norm",
    "phi3": "model.norm", "mixtral": "model.norm", "qwen3_moe": "model.norm",
    "phi": "model.final_layernorm", "gpt2": "transformer.ln_f", "gptj": "transformer.ln_f",
    "falcon": "transformer.ln_f", "falcon_new": "transformer.ln_f",
    "gpt_neox": "gpt_neox.final_layer_norm", "gpt_neox_sequential": "gpt_neox.final_layer_norm",
    "opt": "model.decoder.final_layer_norm", "modernbert": "final_norm",
}
#: Documented modules (paths inside a block): mlp.inner (input of), mlp.out, attn.out.
EXPECTED_MODULES = {
    **{f: ("mlp.down_proj", "mlp", "self_attn.o_proj")
       for f in ("llama", "mistral", "qwen2", "qwen3", "olmo", "phi3")},
    **{f: ("mlp.down_proj", "post_feedforward_layernorm", "self_attn.o_proj") for f in SANDWICH},
    "phi": ("mlp.fc2", "mlp", "self_attn.dense"),
    "gpt2": ("mlp.c_proj", "mlp", "attn.c_proj"),
    "gpt_neox": ("mlp.dense_4h_to_h", "mlp", "attention.dense"),
    "gpt_neox_sequential": ("mlp.dense_4h_to_h", "mlp", "attention.dense"),
    "gptj": ("mlp.fc_out", "mlp", "attn.out_proj"),
    "opt": ("fc2", "fc2", "self_attn.out_proj"),
    "opt_post_ln": ("fc2", "fc2", "self_attn.out_proj"),
    "falcon": ("mlp.dense_4h_to_h", "mlp", "self_attention.dense"),
    "falcon_new": ("mlp.dense_4h_to_h", "mlp", "self_attention.dense"),
    "mixtral": ("mlp.experts", "mlp", "self_attn.o_proj"),
    "qwen3_moe": ("mlp.experts", "mlp", "self_attn.o_proj"),
    **{f: ("output.dense", "output.dense", "attention.output.dense")
       for f in ("bert", "roberta", "xlm_roberta", "electra")},
    "mpnet": ("output.dense", "output.dense", "attention.attn.o"),
    "distilbert": ("ffn.lin2", "ffn", "attention.out_lin"),
    "modernbert": ("mlp.Wo", "mlp", "attn.Wo"),
}
FAMILIES = tuple(EXPECTED_MODULES)

_MODELS: dict[str, torch.nn.Module] = {}


def tiny_model(family: str) -> torch.nn.Module:
    """The family's tiny model, float32, eval mode (built once per test session)."""
    if family not in _MODELS:
        from transformers import AutoModel, AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.manual_seed(0)
        auto = AutoModel if family in ENCODERS else AutoModelForCausalLM
        _MODELS[family] = auto.from_config(tiny_config(family), dtype=torch.float32).eval()
    return _MODELS[family]


def _inputs(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (2, 10), generator=generator)


def _sub(root: torch.nn.Module, path: str) -> torch.nn.Module:
    return root.get_submodule(path) if path else root


def _record(model, sites, input_ids, edit=None):
    recorded = {}

    def keep(site, tensor):
        recorded[site.key] = tensor.detach().clone()
        return edit(site, tensor) if edit else None

    with torch.no_grad(), site_hooks(model, sites, keep):
        output = model(input_ids, output_hidden_states=True)
    return recorded, output


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape, (what, a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= TOLERANCE, f"{what}: max |difference| {diff:.2e}"


def _attention_term(family, block, attn_out):
    return block.post_attention_layernorm(attn_out) if family in SANDWICH else attn_out


def _expected_resid(family, block, prev, attn_out, mlp_out):
    """The block output the family's residual rule gives from its sites."""
    if family in POST_LN_NORMS:
        first, second = (_sub(block, p) for p in POST_LN_NORMS[family])
        return second(mlp_out + first(attn_out + prev))
    return prev + _attention_term(family, block, attn_out) + mlp_out


def _mlp_out_from_inner(family, block, recorded, layer):
    """mlp.out recomputed from the recorded mlp.inner through the down projection(s)."""
    inner = recorded[f"L{layer:02d}.mlp.inner"]
    down_path = EXPECTED_MODULES[family][0]
    if family in MOE and f"L{layer:02d}.mlp.router" in recorded:
        experts = _sub(block, down_path)
        router = recorded[f"L{layer:02d}.mlp.router"]
        units = inner.reshape(*inner.shape[:2], N_EXPERTS, EXPERT_FFN)
        # fused weights: down_proj is (n_experts, d_model, expert_ffn)
        per_expert = torch.einsum("btef,edf->bted", units, experts.down_proj)
        return (router[..., None] * per_expert).sum(2)
    if family in MOE:  # a dense layer of a mixed MoE model
        down_path = "mlp.down_proj"
    projected = _sub(block, down_path)(inner)
    if family in SANDWICH:
        projected = block.post_feedforward_layernorm(projected)
    return projected


def _all_sites(model, family):
    names = list(SITE_NAMES) + (["mlp.router"] if family in MOE else [])
    return resolve_sites(model, names)


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_match_unhooked_model(family):
    model = tiny_model(family)
    input_ids = _inputs()
    with torch.no_grad():
        plain = model(input_ids, output_hidden_states=True)
    sites = _all_sites(model, family)
    recorded, hooked = _record(model, sites, input_ids)
    prefix, blocks = block_list(model)
    n_layers = len(blocks)
    hidden = plain.hidden_states
    assert len(hidden) == n_layers + 1

    inner_path, out_path, attn_path = EXPECTED_MODULES[family]
    for site in sites:
        # the documented module, the width read from it, the recorded shape
        if site.name == "mlp.inner":
            dense_layer = family == "qwen3_moe" and site.layer == 1  # mlp_only_layers=[1]
            expected = "mlp.down_proj" if dense_layer else inner_path
            assert site.module_path == f"{prefix}.{site.layer}.{expected}", site
            assert site.capture == ("experts" if family in MOE and not dense_layer else "input")
        if site.name == "mlp.out":
            assert site.module_path == f"{prefix}.{site.layer}.{out_path}", site
        if site.name == "attn.out":
            assert site.module_path == f"{prefix}.{site.layer}.{attn_path}", site
        assert recorded[site.key].shape == (*input_ids.shape, site.width), site.key
    widths = {s.key: s.width for s in sites}
    for layer in range(n_layers):
        key = f"L{layer:02d}"
        assert widths[f"{key}.resid"] == widths[f"{key}.mlp.out"] == widths[f"{key}.attn.out"] == D_MODEL
        moe_layer = f"{key}.mlp.router" in widths
        expected_inner = (N_EXPERTS * EXPERT_FFN if moe_layer
                          else 4 * D_MODEL if family == "gpt2" else FFN)
        assert widths[f"{key}.mlp.inner"] == expected_inner, key
        if family in MOE:
            assert moe_layer == (family == "mixtral" or layer != 1), key  # qwen3_moe: layer 1 dense

    norm = _sub(model, FINAL_NORM[family]) if family in FINAL_NORM else None
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            key = f"L{layer:02d}"
            resid = recorded[f"{key}.resid"]
            # resid is the block output reported by output_hidden_states (the last one
            # after the final norm where the model applies it there)
            if layer < n_layers - 1 or norm is None:
                _close(resid, hidden[layer + 1], f"{key}.resid vs hidden_states")
            else:
                _close(norm(resid), hidden[layer + 1], f"{key} final_norm(resid) vs hidden_states")
            # the block's residual rule closes on the unhooked stream
            prev = hidden[layer]
            expected = _expected_resid(family, block, prev, recorded[f"{key}.attn.out"],
                                       recorded[f"{key}.mlp.out"])
            _close(expected, resid, f"{key} residual identity")
            # mlp.inner through the down projection is mlp.out
            _close(_mlp_out_from_inner(family, block, recorded, layer),
                   recorded[f"{key}.mlp.out"], f"{key} down(mlp.inner)")
            if f"{key}.mlp.router" in recorded:  # routing weights of the top-2 experts
                router = recorded[f"{key}.mlp.router"]
                assert ((router > 0).sum(-1) == 2).all()
                if family == "mixtral":  # renormalised top-k (Qwen3-MoE: norm_topk_prob off)
                    _close(router.sum(-1), torch.ones_like(router[..., 0]), f"{key} router sums")
                else:
                    assert (router.sum(-1) < 1).all()
                units = recorded[f"{key}.mlp.inner"].reshape(*router.shape, EXPERT_FFN)
                assert (units[router == 0] == 0).all(), "unrouted experts' units are zero"
    final = "logits" if hasattr(plain, "logits") else "last_hidden_state"
    assert torch.equal(getattr(plain, final), getattr(hooked, final))


@pytest.mark.parametrize("family", FAMILIES)
def test_replacing_mlp_out_changes_the_block_as_documented(family):
    """Zeroing mlp.out at layer 1 leaves the block with only its attention contribution."""
    model = tiny_model(family)
    input_ids = _inputs(2)
    layer = 1
    with torch.no_grad():
        prev = model(input_ids, output_hidden_states=True).hidden_states[layer]
    sites = resolve_sites(model, ["attn.out", "mlp.out", "resid"], layers=[layer])

    def zero(site, tensor):
        return torch.zeros_like(tensor) if site.name == "mlp.out" else None

    recorded, _ = _record(model, sites, input_ids, edit=zero)
    _, blocks = block_list(model)
    key = f"L{layer:02d}"
    with torch.no_grad():
        expected = _expected_resid(family, blocks[layer], prev, recorded[f"{key}.attn.out"],
                                   torch.zeros_like(recorded[f"{key}.mlp.out"]))
    _close(expected, recorded[f"{key}.resid"], "resid with mlp.out zeroed")


@pytest.mark.parametrize("family", MOE)
def test_moe_replacements(family):
    """An unchanged mlp.inner round-trips, a zeroed one silences the experts, doubled router
    weights double mlp.out."""
    model = tiny_model(family)
    input_ids = _inputs(3)
    layer = 0
    sites = resolve_sites(model, ["mlp.inner", "mlp.router", "mlp.out"], layers=[layer])
    key = f"L{layer:02d}"
    base, base_out = _record(model, sites, input_ids)
    same, same_out = _record(model, sites, input_ids,
                             edit=lambda s, t: t.clone() if s.name == "mlp.inner" else None)
    _close(same[f"{key}.mlp.out"], base[f"{key}.mlp.out"], "round trip")
    _close(same_out.logits, base_out.logits, "round trip logits")
    zeroed, _ = _record(model, sites, input_ids,
                        edit=lambda s, t: torch.zeros_like(t) if s.name == "mlp.inner" else None)
    assert zeroed[f"{key}.mlp.out"].abs().max() == 0
    doubled, _ = _record(model, sites, input_ids,
                         edit=lambda s, t: 2 * t if s.name == "mlp.router" else None)
    _close(doubled[f"{key}.mlp.out"], 2 * base[f"{key}.mlp.out"], "doubled router weights")


@pytest.mark.parametrize("family", MOE)
def test_neuron_sets_edit_the_router_weights(family):
    """A neuron set naming ``L00.mlp.router`` units: lesioning one expert equals zeroing its
    router weight; lesioning every expert equals zeroing the block's mlp.out."""
    from brainalign.interventions import NeuronSet, lesion, scale

    model = tiny_model(family)
    input_ids = _inputs(3)
    sites = resolve_sites(model, ["mlp.router", "mlp.out"], layers=[0])
    with torch.no_grad():
        base = model(input_ids).logits
        with lesion(model, NeuronSet({"L00.mlp.router": [1]})):
            one = model(input_ids).logits
        with lesion(model, NeuronSet({"L00.mlp.router": list(range(N_EXPERTS))})):
            every = model(input_ids).logits
        with scale(model, NeuronSet({"L00.mlp.router": [1]}), 1.0):
            unchanged = model(input_ids).logits

    def zero_expert(site, tensor):
        return tensor.index_fill(-1, torch.tensor([1]), 0.0) if site.name == "mlp.router" else None

    _, expected_one = _record(model, sites, input_ids, edit=zero_expert)
    _, expected_every = _record(model, sites, input_ids,
                                edit=lambda s, t: torch.zeros_like(t) if s.name == "mlp.out" else None)
    _close(one, expected_one.logits, "expert 1 lesioned")
    _close(every, expected_every.logits, "every expert lesioned")
    _close(unchanged, base, "router scaled by 1")
    assert (one - base).abs().max() > 1e-4  # expert 1 was routed to somewhere
    with pytest.raises(ValueError, match=f"has {N_EXPERTS} units"):
        NeuronSet({"L00.mlp.router": [N_EXPERTS]}).sites(model)


LLAMA_LAYOUT = {
    "blocks": "model.layers",
    "mlp.inner": ["mlp.down_proj", "input"],
    "mlp.out": ["mlp", "output"],
    "attn.out": ["self_attn.o_proj", "output"],
    "resid": ["", "output"],
}


def test_declared_layout_reproduces_automatic(tmp_path):
    model = tiny_model("llama")
    input_ids = _inputs(4)
    auto = resolve_sites(model, SITE_NAMES)
    toml = tmp_path / "layout.toml"
    toml.write_text('[layout]\nblocks = "model.layers"\n"mlp.inner" = ["mlp.down_proj", "input"]\n'
                    '"mlp.out" = ["mlp", "output"]\n"attn.out" = ["self_attn.o_proj", "output"]\n'
                    f'widths = {{"mlp.inner" = {FFN}}}\n')
    json_path = tmp_path / "layout.json"
    json_path.write_text(json.dumps(LLAMA_LAYOUT))
    assert check_layout(model, LLAMA_LAYOUT) == {
        "mlp.inner": (FFN,) * 3, "mlp.out": (D_MODEL,) * 3, "resid": (D_MODEL,) * 3,
        "attn.out": (D_MODEL,) * 3}
    for layout in (LLAMA_LAYOUT, str(toml), json_path, load_layout(toml)):
        declared = resolve_sites(model, SITE_NAMES, layout=layout)
        assert [(s.key, s.module_path, s.capture, s.width) for s in declared] == [
            (s.key, s.module_path, s.capture, s.width) for s in auto]
    a, _ = _record(model, auto, input_ids)
    b, _ = _record(model, resolve_sites(model, SITE_NAMES, layout=LLAMA_LAYOUT), input_ids)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_wrong_declared_layouts_are_clear_errors(tmp_path):
    model = tiny_model("llama")
    misspelt = {**LLAMA_LAYOUT, "mlp.inner": ["mlp.down_projection", "input"]}
    with pytest.raises(ValueError, match=r"no sub-module 'mlp.down_projection'.*"
                                         r"did you mean \['mlp.down_proj'"):
        resolve_sites(model, ["mlp.inner"], layout=misspelt)
    with pytest.raises(ValueError, match="is 48 wide, the layout declares 64"):
        check_layout(model, {**LLAMA_LAYOUT, "widths": {"mlp.inner": 64}})
    with pytest.raises(ValueError, match="not a non-empty ModuleList"):
        check_layout(model, {**LLAMA_LAYOUT, "blocks": "model.norm"})
    with pytest.raises(ValueError, match="capture one of"):
        load_layout({"mlp.out": ["mlp", "outputs"]})
    with pytest.raises(ValueError, match="unknown key"):
        load_layout({"mlp.outer": ["mlp", "output"]})
    with pytest.raises(ValueError, match="not a fused experts module"):
        check_layout(model, {"mlp.inner": ["mlp", "experts"]})
    with pytest.raises(ValueError, match="not in the declared layout"):
        resolve_sites(model, ["mlp.out"], layout={"attn.out": ["self_attn.o_proj", "output"]})
    bad = tmp_path / "bad.toml"
    bad.write_text('"mlp.inner" = [unclosed')
    with pytest.raises(ValueError, match="not valid"):
        load_layout(bad)


class _ToyBlock(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.mixer = torch.nn.Linear(width, width)
        self.up = torch.nn.Linear(width, 3 * width)
        self.back = torch.nn.Linear(3 * width, width)

    def forward(self, x):
        x = x + self.mixer(x)
        return x + self.back(torch.relu(self.up(x)))


class _ToyModel(torch.nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.embed = torch.nn.Embedding(16, width)
        self.stack = torch.nn.ModuleList([_ToyBlock(width) for _ in range(2)])

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for block in self.stack:
            x = block(x)
        return x


def test_unsupported_model_says_how_to_declare_a_layout():
    torch.manual_seed(0)
    toy = _ToyModel().eval()
    with pytest.raises(UnsupportedModelError) as info:
        resolve_sites(toy, ["mlp.out"])
    message = str(info.value)
    assert "cannot find the transformer blocks of _ToyModel" in message
    for needed in ("layout={'blocks':", "'mlp.inner': ['mlp.down_proj', 'input']",
                   "load_layout", "check_layout", "--layout"):
        assert needed in message, needed
    assert isinstance(info.value, ValueError)  # the CLI reports ValueErrors cleanly
    # blocks found, sites not: the message names the block and what was found
    layout_blocks_only = {"blocks": "stack"}
    with pytest.raises(ValueError, match="not in the declared layout"):
        resolve_sites(toy, ["mlp.out"], layout=layout_blocks_only)
    # and a declared layout makes the toy model recordable, checked against its forward
    layout = {"blocks": "stack", "mlp.inner": ["back", "input"], "mlp.out": ["back", "output"],
              "attn.out": ["mixer", "output"]}
    sites = resolve_sites(toy, SITE_NAMES, layout=layout)
    assert {s.name: s.width for s in sites if s.layer == 0} == {
        "mlp.inner": 24, "mlp.out": 8, "resid": 8, "attn.out": 8}
    ids = torch.arange(1, 7)[None]
    recorded = {}
    with torch.no_grad(), site_hooks(toy, sites, lambda s, t: recorded.__setitem__(s.key, t.clone())):
        out = toy(ids)
    torch.testing.assert_close(recorded["L01.resid"], out, rtol=0, atol=0)
    with torch.no_grad():
        first = toy.embed(ids)
        _close(first + recorded["L00.attn.out"] + recorded["L00.mlp.out"], recorded["L00.resid"], "toy")


def test_recorder_uses_the_loaded_models_layout(tmp_path):
    """record_story reads LoadedModel.layout: a declared layout records what the automatic
    one does (its settings name the layout, so the two recordings are told apart), and a
    wrong one is refused when it is declared. The layout belongs to the model object, so
    every LoadedModel holding that model sees it."""
    import dataclasses

    import numpy as np
    from test_record import make_story, tiny_loaded

    from brainalign.record import Recording, record_story

    loaded = tiny_loaded("llama")
    story = make_story(20)
    auto = Recording.open(record_story(loaded, story, ["mlp.inner", "attn.out"], tmp_path / "auto",
                                       layers=[1], progress=False))
    declared = dataclasses.replace(loaded, layout=LLAMA_LAYOUT)
    mine = Recording.open(record_story(declared, story, ["mlp.inner", "attn.out"],
                                       tmp_path / "declared", layers=[1], progress=False))
    for site in ("mlp.inner", "attn.out"):
        assert np.array_equal(auto.matrix(site, 1), mine.matrix(site, 1)), site
    assert "layout" not in auto.manifest["settings"]
    assert json.loads(mine.manifest["settings"]["layout"]) == declared.layout.to_dict()
    assert loaded.layout is declared.layout  # one model object, one layout
    assert dataclasses.replace(declared).layout is declared.layout  # kept when left out
    with pytest.raises(ValueError, match="no sub-module 'self_attn.out'"):
        dataclasses.replace(loaded, layout={**LLAMA_LAYOUT, "attn.out": ["self_attn.out", "output"]})
    assert loaded.layout is declared.layout  # a refused layout changes nothing
    loaded.layout = None
    assert declared.layout is None


def test_recording_a_mixture_of_experts_with_its_router(tmp_path):
    """record_story on a tiny Mixtral: routing weights pooled to words sum to 1 (top-2,
    renormalised), and each word's expert units are zero exactly where its tokens were
    routed to no expert."""
    import numpy as np
    from test_record import make_story, tiny_tokenizer

    from brainalign.models.registry import LoadedModel
    from brainalign.record import Recording, record_story

    model = tiny_model("mixtral")
    loaded = LoadedModel(model=model, tokenizer=tiny_tokenizer("causal"), name="tiny-mixtral",
                         kind="causal", architecture="mixtral",
                         provenance={"model_id": "tiny-mixtral"})
    recording = Recording.open(record_story(loaded, make_story(40), ["mlp.router", "mlp.inner"],
                                            tmp_path, pooling="first", progress=False))
    for layer in recording.layers:
        router = np.asarray(recording.block("mlp.router", layer), dtype=np.float64)
        inner = np.asarray(recording.block("mlp.inner", layer), dtype=np.float64)
        assert router.shape == (40, N_EXPERTS) and inner.shape == (40, N_EXPERTS * EXPERT_FFN)
        np.testing.assert_allclose(router.sum(axis=1), 1.0, atol=1e-5)
        assert ((router > 0).sum(axis=1) == 2).all()  # first token of each word: top-2
        active = np.abs(inner.reshape(40, N_EXPERTS, EXPERT_FFN)).sum(axis=2) > 0
        np.testing.assert_array_equal(active, router > 0)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in MOE])
def test_parameter_regions_read_the_residual_axis_of_attention_outputs(family):
    """Study C counts region entries per hidden dimension: a row of the (square) attention
    output projection writes one residual dimension, whatever the family calls it."""
    from brainalign.interventions.regions import Region, dimension_profile

    model = tiny_model(family)
    (site,) = resolve_sites(model, ["attn.out"], [0])
    key = site.module_path + ".weight"
    weight = dict(model.named_parameters())[key]
    assert weight.shape == (D_MODEL, D_MODEL)
    writes = np.zeros(weight.shape, dtype=bool)
    if type(_sub(model, site.module_path)).__name__ == "Conv1D":  # GPT-2 stores (in, out)
        writes[:, 5] = True
    else:
        writes[5, :] = True
    profile = dimension_profile(model, Region({key: torch.as_tensor(np.flatnonzero(writes))}))
    assert profile.counts[5] == D_MODEL and profile.counts.sum() == D_MODEL


def test_parameter_regions_treat_each_expert_as_a_matrix():
    """A stack of expert matrices (n_experts, out, in) is one matrix per expert for study C:
    each expert gets its own top entries, and the hidden axis of the stack is found by the
    parameter's own name (down_proj writes the residual stream)."""
    from brainalign.interventions.regions import (block_matrices, dimension_parameter,
                                                  dimension_profile, select_region)

    model = tiny_model("mixtral")
    params = block_matrices(model)
    key = "model.layers.0.mlp.experts.down_proj"
    stack = params[key]
    assert stack.ndim == 3 and stack.shape[:2] == (N_EXPERTS, D_MODEL)
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.rand(p.shape, generator=generator) for name, p in params.items()}
    scores[key][0] += 10  # expert 0 dominates the whole stack
    scores[key][2, 5, :] += 100  # and output row 5 of expert 2 dominates expert 2
    per_matrix = stack.shape[1] * stack.shape[2]
    region = select_region(scores, 0.25, "top")
    experts = region.indices[key] // per_matrix
    np.testing.assert_array_equal(np.bincount(experts.numpy(), minlength=N_EXPERTS),
                                  [round(0.25 * per_matrix)] * N_EXPERTS)
    random = select_region(scores, 0.25, "random")
    np.testing.assert_array_equal(np.bincount((random.indices[key] // per_matrix).numpy(),
                                              minlength=N_EXPERTS),
                                  [round(0.25 * per_matrix)] * N_EXPERTS)
    assert random.n_parameters == region.n_parameters == sum(p.numel() for p in params.values())
    # expert 2's top entries: its row 5 whole (the stack's hidden axis is axis 1)
    only_stack = type(region)({key: region.indices[key]}, n_parameters=region.n_parameters)
    profile = dimension_profile(model, only_stack)
    assert profile.counts.sum() == region.indices[key].numel()
    assert profile.counts[5] >= stack.shape[2] and profile.top_dimensions(1)[0] == 5
    probe, twin = dimension_parameter(model, only_stack, scores, 5, 3)
    (flat,) = probe.indices[key].tolist()
    (flat_twin,) = twin.indices[key].tolist()
    expert, row, col = np.unravel_index(flat, tuple(stack.shape))
    best = np.unravel_index(int(torch.argmax(scores[key][:, 5, :])), (N_EXPERTS, stack.shape[2]))
    assert (expert, row, col) == (best[0], 5, best[1])
    assert np.unravel_index(flat_twin, tuple(stack.shape)) == (expert, 3, col)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_of_every_family_is_loaded_as_its_kind(family):
    """load_model infers the kind of a local checkpoint or hub id from its config: GPT-J,
    OPT, Falcon and the mixtures of experts are causal like Llama (they were taken for
    encoders: loaded without their head and recorded with context on both sides)."""
    from brainalign.models.registry import _kind_from_config

    expected = "encoder" if family in ENCODERS else "causal"
    assert _kind_from_config(tiny_model(family).config) == expected


def test_encoder_decoder_and_unknown_model_types_are_refused():
    import transformers as tf

    from brainalign.models.registry import _kind_from_config

    bart = tf.BartConfig(vocab_size=100, d_model=16, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2,
                         encoder_ffn_dim=32, decoder_ffn_dim=32)
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        _kind_from_config(bart)
    unknown = tf.PretrainedConfig()
    unknown.model_type = "my-own-model"
    with pytest.raises(ValueError, match="pass kind='causal' or kind='encoder'"):
        _kind_from_config(unknown)
    unknown.is_decoder = True
    assert _kind_from_config(unknown) == "causal"


@pytest.mark.parametrize("family, fragment", [
    ("glm4", "norms ['post_self_attn_layernorm', 'post_mlp_layernorm']"),
    ("granite", "a residual multiplier (0.5)"),
    ("bart", "encoder-decoder"),
])
def test_blocks_whose_residual_rule_is_unknown_need_a_declared_layout(family, fragment):
    """Blocks that look like a known family but change a branch before the residual add
    (GLM-4's extra post-norms, Granite's residual multiplier) or decoders of
    encoder-decoder models (BART: shifted tokens, cross-attention) are refused with the way
    to declare a layout, instead of recording sites that are not what reaches the
    residual stream."""
    import transformers as tf

    small = dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=8, pad_token_id=0)
    config = {"glm4": lambda: tf.Glm4Config(**small),
              "granite": lambda: tf.GraniteConfig(**small, residual_multiplier=0.5),
              "bart": lambda: tf.BartConfig(vocab_size=100, d_model=16, encoder_layers=1,
                                            decoder_layers=1, encoder_attention_heads=2,
                                            decoder_attention_heads=2, encoder_ffn_dim=32,
                                            decoder_ffn_dim=32)}[family]()
    model = tf.AutoModel.from_config(config)
    with pytest.raises(UnsupportedModelError, match="declare where the sites are") as info:
        resolve_sites(model, ["mlp.out"], [0])
    assert fragment in str(info.value)


def test_a_repeated_site_name_is_recorded_once():
    model = tiny_model("llama")
    once = resolve_sites(model, ["resid", "mlp.out"], [0, 1])
    repeated = resolve_sites(model, ["resid", "mlp.out", "resid"], [1, 0, 1])
    assert [s.key for s in repeated] == [s.key for s in once]
    assert len(once) == 4


def test_a_declared_layout_over_a_block_shared_by_every_layer_is_refused():
    """ALBERT runs one block for all its layers: a declared layout over it would record the
    first pass only (the forward stops there) while a lesion edits every pass."""
    import transformers as tf

    model = tf.AlbertModel(tf.AlbertConfig(vocab_size=100, embedding_size=8, hidden_size=16,
                                           num_hidden_layers=3, num_attention_heads=2,
                                           intermediate_size=32)).eval()
    layout = {"blocks": "encoder.albert_layer_groups.0.albert_layers",
              "mlp.out": ["ffn_output", "output"], "resid": ["", "output"]}
    with pytest.raises(ValueError, match="ran 3 times in one forward pass"):
        check_layout(model, layout)
