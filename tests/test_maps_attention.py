"""psm.source=attention: the captured image -> prompt attention equals softmax(q k^T / sqrt(d)) computed by
hand from the same q and k, the capture adds no forward pass and changes nothing, configs refuse the toy."""

import math

import pytest
import torch

import tiny_models
from vipo.attention import ATTENTION_MODELS, AttentionConfig, attention_capture, image_to_text_probs
from vipo.config import ConfigError, MapConfig, load
from vipo.rollout import rollout

MAKERS = {"flux": tiny_models.tiny_flux, "sd3": tiny_models.tiny_sd3, "wan": tiny_models.tiny_wan}
PROMPTS = ["a red cat", "the big blue ball"]
TEXT = tiny_models.TEXT_LEN  # 16 T5 / UMT5 positions
# Key layout at the first hooked layer, written out per model: (image rows, prompt columns) of q k^T,
# and the content-token positions of each prompt (the tiny tokenizers: CLIP adds <s> at 0, T5 only </s>).
LAYOUT = {
    "flux": dict(rows=lambda s: slice(TEXT, s), cols=slice(0, TEXT), content=[[0, 1, 2], [0, 1, 2, 3]]),
    "sd3": dict(rows=lambda s: slice(0, s - 77 - TEXT), cols=slice(-77 - TEXT, None),
                content=[[1, 2, 3, 77, 78, 79], [1, 2, 3, 4, 77, 78, 79, 80]]),
    "wan": dict(rows=lambda s: slice(0, s), cols=slice(None, None), content=[[0, 1, 2], [0, 1, 2, 3]]),
}


@pytest.fixture(scope="module", params=["flux", "sd3", "wan"])
def model(request):
    return request.param, MAKERS[request.param]()


def first_layer(gen, name):
    return ATTENTION_MODELS.get(name).modules(gen)[0][1]


def reference_qk(gen, name, x, s, cond):
    """q, k of the first hooked layer's attention call, recorded by replacing F.scaled_dot_product_attention."""
    seen, inside = [], []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        q, k = args[:2] if args else (kw["query"], kw["key"])
        if inside:
            seen.append((q.clone(), k.clone()))
        return real(*args, **kw)

    mod = first_layer(gen, name)
    h1 = mod.register_forward_pre_hook(lambda *a: inside.append(1))
    h2 = mod.register_forward_hook(lambda *a: inside.clear())
    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            gen.velocity(x, s, cond)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
        h1.remove(), h2.remove()
    assert len(seen) == 1
    return seen[0]


def test_captured_map_equals_softmax_by_hand(model):
    name, gen = model
    torch.manual_seed(0)
    x = torch.randn(2, *gen.latent_shape())
    s = torch.full((2,), 0.7)
    cond = gen.encode_prompts(PROMPTS)
    q, k = reference_qk(gen, name, x, s, cond)  # [R, H, Sq, D], [R, H, Sk, D]; R = 2 (FLUX) or 4 (CFG)
    lay = LAYOUT[name]
    logits = q.double() @ k.double().mT / math.sqrt(q.shape[-1])  # [R, H, Sq, Sk]
    probs = logits.softmax(-1)[:, :, lay["rows"](q.shape[2]), lay["cols"]].mean(1)[-2:]  # [2, N, L] conditional rows
    w = torch.zeros(2, probs.shape[-1], dtype=torch.float64)
    for i, pos in enumerate(lay["content"]):
        w[i, pos] = 1 / len(pos)
    want = torch.einsum("bnl,bl->bn", probs, w)  # [2, N]

    cfg = MapConfig(attention=AttentionConfig(layers=[0]))
    with attention_capture(gen, cfg, PROMPTS, 1, name) as cap:
        with torch.no_grad():
            gen.velocity(x, s, cond)
    got = cap.token_maps()  # [2, *token grid]
    assert cap.sdpa_calls == 1 and got.shape[1:] == ATTENTION_MODELS.get(name).token_grid(gen)
    torch.testing.assert_close(got.flatten(1).double(), want, atol=1e-6, rtol=1e-5)
    assert want.std() > 1e-4  # the check is not between two constants
    maps = cap.maps(gen.map_grid(), cfg)
    assert maps.shape == (2, *gen.map_grid()) and maps.amin() == 0 and maps.amax() == 1


def count_forwards(gen):
    calls = []
    return calls, gen.transformer.register_forward_pre_hook(lambda *a: calls.append(1))


def test_capture_adds_no_forward_pass_and_changes_nothing(model):
    name, gen = model
    kw = dict(kind="flow_grpo", noise_level=0.7, reduction="position", micro_batch=2)
    sigmas = gen.sigmas(3)
    calls, h = count_forwards(gen)
    plain = rollout(gen, PROMPTS, 2, sigmas, gen=torch.Generator().manual_seed(0), **kw)
    n_plain = len(calls)
    calls.clear()
    rows = [p for p in PROMPTS for _ in range(2)]
    with attention_capture(gen, MapConfig(), rows, 3, name) as cap:
        captured = rollout(gen, PROMPTS, 2, sigmas, gen=torch.Generator().manual_seed(0), **kw)
    h.remove()
    assert len(calls) == n_plain == 3 * 2  # 3 steps x 2 micro-batches (CFG runs in the same batched call)
    assert torch.equal(plain.latents, captured.latents) and torch.equal(plain.logp, captured.logp)
    assert cap.sdpa_calls == 3 * 2 * len(ATTENTION_MODELS.get(name).modules(gen))
    assert "velocity" not in gen.__dict__  # the generator is as before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for _, m, _ in ATTENTION_MODELS.get(name).modules(gen))
    assert cap.maps(gen.map_grid(), MapConfig()).shape == (4, *gen.map_grid())


def test_steps_and_layers_select_what_is_averaged():
    gen = tiny_models.tiny_flux()
    kw = dict(kind="flow_grpo", noise_level=0.7, reduction="position", micro_batch=4)
    rows = [p for p in PROMPTS for _ in range(2)]
    out = {}
    for label, att in [("all", AttentionConfig()), ("first", AttentionConfig(steps=[0])),
                       ("last", AttentionConfig(steps=[-1])), ("single", AttentionConfig(layers=[-1], steps=[0]))]:
        with attention_capture(gen, MapConfig(attention=att), rows, 2, "flux") as cap:
            rollout(gen, PROMPTS, 2, gen.sigmas(2), gen=torch.Generator().manual_seed(0), **kw)
        out[label] = cap.token_maps()
    torch.testing.assert_close(out["all"], (out["first"] + out["last"]) / 2)
    assert not torch.allclose(out["first"], out["single"])
    cfg = MapConfig(attention=AttentionConfig(per_step=True))
    with attention_capture(gen, cfg, rows, 2, "flux") as cap:
        rollout(gen, PROMPTS, 2, gen.sigmas(2), gen=torch.Generator().manual_seed(0), **kw)
    per_step = cap.token_maps(per_step=True)  # [4, 2, 8, 8]
    torch.testing.assert_close(per_step[:, 0], out["first"])
    torch.testing.assert_close(per_step[:, 1], out["last"])
    maps = cap.maps(gen.map_grid(), cfg)  # [4, 2, 16, 16]: each step min-max normalised
    assert maps.shape == (4, 2, *gen.map_grid()) and torch.equal(maps.amax((2, 3)), torch.ones(4, 2))
    assert not torch.allclose(maps[:, 0], maps[:, 1])


def test_per_step_advantages_reach_their_own_timestep():
    """update(per_step=True) with adv [B, T, *grid] trains timestep t on adv[:, t] exactly."""
    import copy

    from vipo.update import update

    gen = tiny_models.tiny_flux()
    ro = rollout(gen, PROMPTS, 2, gen.sigmas(3), kind="flow_grpo", noise_level=0.7, reduction="position",
                 micro_batch=4, gen=torch.Generator().manual_seed(0))
    adv_t = torch.randn(4, 3, *gen.map_grid(), generator=torch.Generator().manual_seed(1))  # [B, T, H, W]
    after = []
    for per_step, adv in [(True, adv_t), (False, adv_t[:, 1])]:
        g = copy.deepcopy(gen)
        opt = torch.optim.SGD(g.trainable_parameters(), lr=10.0)
        update(g, opt, ro, adv, [1], kind="flow_grpo", noise_level=0.7, reduction="position", clip_range=0.2,
               micro_batch=4, optimizer_steps=1, max_grad_norm=None, kl_coef=0.0, per_step=per_step)
        after.append(torch.cat([p.detach().flatten() for p in g.trainable_parameters()]))
    before = torch.cat([p.detach().flatten() for p in gen.trainable_parameters()])
    assert torch.equal(after[0], after[1]) and not torch.equal(after[0], before)


def test_noun_tokens_and_the_fallback_to_content():
    gen = tiny_models.tiny_flux()
    cap = attention_capture(gen, MapConfig(attention=AttentionConfig(tokens="nouns", nouns=["Cat", "dog"])),
                            ["a red cat", "a cat and a dog", "a blue ball"], 1, "flux")
    w = cap.weights  # [3, 16]
    assert w[0, 2] == 1 and w[0].sum() == 1
    assert w[1, 1] == 0.5 and w[1, 4] == 0.5  # "a cat and a dog": positions 1 and 4
    torch.testing.assert_close(w[2, :3], torch.full((3,), 1 / 3))  # no noun: every content token


def test_probs_layouts_by_hand():
    q = torch.randn(1, 2, 5, 4)
    k = torch.randn(1, 2, 5, 4)
    full = (q @ k.mT / 2).softmax(-1)  # [1, 2, 5, 5]
    torch.testing.assert_close(image_to_text_probs(q, k, "text_first", 2, chunk=2), full[:, :, 2:, :2].mean(1))
    torch.testing.assert_close(image_to_text_probs(q, k, "image_first", 2, chunk=2), full[:, :, :3, 3:].mean(1))
    torch.testing.assert_close(image_to_text_probs(q, k, "cross", 5), full.mean(1))


def test_toy_and_unknown_generators_are_refused_at_config_time():
    with pytest.raises(ConfigError, match="the toy generator has no prompt tokens"):
        load(["psm.source=attention"])
    with pytest.raises(ConfigError, match="advantage.mode=scalar"):  # GRPO builds no map, so only the usual checks
        load(["psm.source=attention", "advantage.mode=scalar"])
    cfg, _ = load(["psm.source=attention", "experiment=flux_hps", "psm.attention.tokens=nouns",
                   "psm.attention.nouns=[cat]", "psm.attention.layers=[0,-1]"])
    assert cfg.psm.attention.nouns == ["cat"] and cfg.psm.attention.layers == [0, -1]
    with pytest.raises(ConfigError, match="attention.tokens=nouns needs attention.nouns"):
        load(["psm.source=attention", "experiment=flux_hps", "psm.attention.tokens=nouns"])


@pytest.mark.parametrize("generator,source,extra", [("tiny_flux", "attention", "psm.attention.per_step=true"),
                                                    ("tiny_wan", "attention", "psm.attention.layers=[-1]"),
                                                    ("tiny_sd3", "saliency", "psm.saliency.smooth_n=2")])
def test_one_trainer_iteration_with_the_new_sources(tmp_path, generator, source, extra):
    import json

    from test_train_real import tiny_run
    from vipo.train import run

    for alias in ("flux", "sd3", "wan"):  # the tiny generators read their attention like the real ones
        if f"tiny_{alias}" not in ATTENTION_MODELS:
            ATTENTION_MODELS.register(f"tiny_{alias}")(ATTENTION_MODELS.get(alias))
    cfg, raw = tiny_run(tmp_path, generator, f"psm.source={source}", extra, "reward=object_brightness",
                        "backbone.name=tiny_test")
    summary = run(cfg, raw)
    row = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()][-1]
    assert summary["map_source"] == source and row["ratio_min"] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= row["map_mean"] <= 1.0 and row["map_std"] > 0  # a real, non-constant map
