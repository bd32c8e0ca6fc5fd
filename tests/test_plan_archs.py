"""The planner's architectures: parameter counts of the real configs against the sizes their authors publish,
and FLOPs from ``torch.utils.flop_counter`` on the meta device against an analytic count (docs/costs.md)."""

import math

import pytest
import torch

from vipo.plan import arch as A
from vipo.plan.flops import ANALYTIC, INPUTS, Shapes, count, forward_flops

GENERATORS = list(A.models_data()["generators"])

# Exact counts of our builds (a regression pin; the published figures below are rounded by their authors).
EXACT = {
    "black-forest-labs/FLUX.1-dev": 11_901_408_320,
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": 14_288_491_584,
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": 4_999_787_712,
}


@pytest.mark.parametrize("key", GENERATORS)
def test_generator_params_match_published_size(key):
    ga = A.generator_arch(key)
    n = A.n_params(ga.build()) * ga.experts
    pub = ga.published
    assert pub and pub["source"], key
    assert abs(n - pub["params"]) / pub["params"] <= pub["rel_tol"], (key, n, pub)
    if key in EXACT:
        assert n == EXACT[key]


@pytest.mark.parametrize("section,key", [(s, k) for s in ("rewards", "backbones")
                                         for k, e in A.models_data()[s].items() if "published" in e])
def test_reward_and_backbone_params_match_published_size(section, key):
    e = A.models_data()[section][key]
    n = A.n_params(A.build(e))
    assert abs(n - e["published"]["params"]) / e["published"]["params"] <= e["published"]["rel_tol"], (key, n)


def test_every_entry_names_its_source():
    d = A.models_data()
    for k, e in d["generators"].items():
        assert e["transformer"]["source"], k
    for sec in ("encoders", "rewards", "backbones"):
        for k, e in d[sec].items():
            assert e["source"], (sec, k)


def test_unknown_generator_is_one_clear_line():
    with pytest.raises(A.PlanError, match="has no architecture.*known: black-forest-labs/FLUX.1-dev"):
        A.generator_arch("someone/unknown-model")
    assert A.generator_arch("/data/ckpts/FLUX.1-dev").path_or_id == "black-forest-labs/FLUX.1-dev"


@pytest.mark.parametrize("key,shapes", [
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", Shapes(batch=2, frames=3, height=16, width=24, text=32)),
])
def test_flop_counter_equals_analytic_count(key, shapes):
    ga = A.generator_arch(key)
    model = ga.build(torch.bfloat16)
    counted = forward_flops(model, ga.family, shapes)
    assert counted == ANALYTIC[ga.family](ga.transformer["config"], shapes)


def test_attention_is_counted_on_the_meta_device():
    """57 FLUX blocks x 4 S^2 d: the counter sees the attention (as bmm on the meta device's math path), and the
    linear layers are everything else (2 x 2-stream + 1-stream widths, by the analytic count)."""
    from torch.utils.flop_counter import FlopCounterMode

    ga = A.generator_arch("black-forest-labs/FLUX.1-dev")
    model = ga.build(torch.bfloat16)
    s = Shapes(batch=1, frames=1, height=32, width=32, text=64)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(**INPUTS.get("flux")(model, s))
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    S, d = s.image_tokens + s.text, 3072
    assert counts["aten.bmm"] == 57 * 4 * S * S * d
    assert counts["aten.bmm"] + counts["aten.addmm"] == ANALYTIC["flux"](ga.transformer["config"], s)


def test_backward_with_checkpointing_counts_the_recompute():
    """Full fine-tuning: backward = 2 x forward; checkpointing adds one more forward of every block."""
    from vipo.generators.lora import configure_training

    cfg = dict(A.generator_arch("Wan-AI/Wan2.1-T2V-1.3B-Diffusers").transformer)
    cfg["config"] = {**cfg["config"], "num_layers": 2}
    s = Shapes(batch=1, frames=1, height=16, width=16, text=16)
    plain = A.build(cfg, torch.bfloat16)
    configure_training(plain, 0)
    fwd = count(plain, INPUTS.get("wan")(plain, s))
    train = count(plain, INPUTS.get("wan")(plain, s), train=True)
    ck = A.build(cfg, torch.bfloat16)
    configure_training(ck, 0, gradient_checkpointing=True)
    train_ck = count(ck, INPUTS.get("wan")(ck, s), train=True)
    # The first layer's input gradient is not needed (inputs do not require grad): backward is a bit under 2x.
    assert 2.9 * fwd < train <= 3 * fwd
    assert train < train_ck <= train + fwd
    assert math.isclose(train_ck - train, fwd, rel_tol=0.05)
