"""Wan2.2 through the Wan adapter: the A14B two-expert switch (tiny experts, 9 frames of 64x64 -> 16x3x8x8)
and the TI2V-5B layout (48-channel VAE, 16x spatial compression -> 48x3x4x4), against diffusers' WanPipeline."""

import pytest
import torch

from tiny_models import (
    TEXT_LEN, WAN22_BOUNDARY, euler, tiny_wan22, tiny_wan22_5b, tiny_wan22_5b_components, tiny_wan22_components,
)
from vipo.rollout import rollout
from vipo.update import update

PROMPTS = ["a red ball", "a small dog in a house"]


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_wan22()


def count_expert_calls(g):
    """Hooks on both experts that record the timestep (1000 sigma) of every forward call."""
    calls = {"high": [], "low": []}
    hooks = []
    for name, net in (("high", g.transformer), ("low", g.transformer_2)):
        def hook(module, args, kwargs, name=name):
            calls[name].append(round(float(kwargs["timestep"].flatten()[0]), 3))
        hooks.append(net.register_forward_pre_hook(hook, with_kwargs=True))
    return calls, hooks


def pipeline(g, **extra):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=g.tokenizers[0], text_encoder=g.text_encoders[0], transformer=g.transformer,
                       vae=g.vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_euler_matches_wan22_pipeline_with_two_experts(gen):
    """Our Euler loop + decode == WanPipeline(transformer_2, boundary_ratio) with the per-expert guidance
    scales; both call the high-noise expert for t >= 875 and the low-noise one below, step for step."""
    pipe = pipeline(gen, transformer_2=gen.transformer_2, boundary_ratio=WAN22_BOUNDARY)
    x0 = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    calls, hooks = count_expert_calls(gen)
    try:
        with torch.no_grad():
            video = pipe(PROMPTS, negative_prompt="", height=64, width=64, num_frames=9, num_inference_steps=4,
                         guidance_scale=5.0, guidance_scale_2=3.0, latents=x0.clone(), max_sequence_length=TEXT_LEN,
                         output_type="pt").frames  # [2, 9, 3, 64, 64]
        pipe_calls = {k: list(v) for k, v in calls.items()}
        for v in calls.values():
            v.clear()
        sigmas = pipe.scheduler.sigmas.float()
        with torch.no_grad():
            ours = gen.decode(euler(gen, x0, sigmas, gen.encode_prompts(PROMPTS)))  # [2, 3, 9, 64, 64]
    finally:
        for h in hooks:
            h.remove()
    t = [round(float(s) * 1000, 3) for s in sigmas[:-1]]
    assert [x >= 875 for x in t] == [True, True, False, False]  # 2 high-noise steps, 2 low-noise steps
    # the pipeline runs cond and uncond separately (2 calls per step), we batch them (1 call per step)
    assert pipe_calls == {"high": [t[0]] * 2 + [t[1]] * 2, "low": [t[2]] * 2 + [t[3]] * 2}
    assert calls == {"high": t[:2], "low": t[2:]}
    diff = (ours - video.float().permute(0, 2, 1, 3, 4)).abs().max().item()
    assert diff < 1e-4, diff
    # the experts differ, so the switch matters: the high expert alone gives another video
    gen.transformer_2, saved = None, gen.transformer_2
    try:
        with torch.no_grad():
            alone = gen.decode(euler(gen, x0, sigmas, gen.encode_prompts(PROMPTS)))
    finally:
        gen.transformer_2 = saved
    assert (alone - ours).abs().max() > 1e-3


def test_euler_matches_ti2v_5b_pipeline():
    """TI2V-5B text-to-video: 48 latent channels at 1/16 resolution, one timestep per token (expand_timesteps)."""
    g = tiny_wan22_5b()
    assert g.latent_shape() == (48, 3, 4, 4) and g.map_grid() == (3, 4, 4)
    assert g.latent_frame_of().tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    pipe = pipeline(g, expand_timesteps=True)
    x0 = torch.randn(2, 48, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        video = pipe(PROMPTS, negative_prompt="", height=64, width=64, num_frames=9, num_inference_steps=3,
                     guidance_scale=5.0, latents=x0.clone(), max_sequence_length=TEXT_LEN,
                     output_type="pt").frames  # [2, 9, 3, 64, 64]
        ours = g.decode(euler(g, x0, pipe.scheduler.sigmas.float(), g.encode_prompts(PROMPTS)))
    assert ours.shape == (2, 3, 9, 64, 64)
    diff = (ours - video.float().permute(0, 2, 1, 3, 4)).abs().max().item()
    assert diff < 1e-4, diff
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_wan22_5b(height=48)  # 16x VAE x 2x2 patches


def test_rollout_and_update_call_the_expert_that_owns_each_step():
    """Schedule (shift 5, 4 steps): sigmas 1, .9375, .8333, .625 -> steps 0-1 high-noise, 2-3 low-noise.
    Rollout visits all four steps; the update trains steps 1 and 2 (one each side of the boundary)."""
    gen = tiny_wan22()
    sigmas = gen.sigmas(4)
    assert torch.allclose(sigmas, torch.tensor([1.0, 0.9375, 2.5 / 3, 0.625, 0.0]), atol=1e-6)
    opt = torch.optim.AdamW(gen.trainable_parameters(), lr=1e-3)
    calls, hooks = count_expert_calls(gen)
    try:
        ro = rollout(gen, PROMPTS, 2, sigmas, kind="flow_grpo", noise_level=0.7, reduction="position",
                     micro_batch=2, gen=torch.Generator().manual_seed(0))
        in_rollout = {k: list(v) for k, v in calls.items()}
        for v in calls.values():
            v.clear()
        adv = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # [B, F, H, W]
        stats = update(gen, opt, ro, adv, [1, 2], kind="flow_grpo", noise_level=0.7, reduction="position",
                       clip_range=0.2, micro_batch=2, optimizer_steps=1, max_grad_norm=1.0, kl_coef=0.0)
    finally:
        for h in hooks:
            h.remove()
    # 4 samples in micro-batches of 2, CFG batched into one call: 2 calls per step
    assert in_rollout == {"high": [1000.0] * 2 + [937.5] * 2, "low": [833.333] * 2 + [625.0] * 2}
    assert calls == {"high": [937.5] * 2, "low": [833.333] * 2}
    assert stats["ratio_min"] == 1.0 and stats["ratio_max"] == 1.0  # on-policy: exactly 1
    named = dict(gen.named_parameters())
    changed = {n.split(".")[0] for n, p in named.items() if "lora_B" in n and p.abs().sum() > 0}
    assert changed == {"transformer", "transformer_2"}  # both experts' LoRA trained


@pytest.mark.parametrize("which,trained,frozen", [("both", {"transformer", "transformer_2"}, set()),
                                                  ("high", {"transformer"}, {"transformer_2"}),
                                                  ("low", {"transformer_2"}, {"transformer"})])
def test_train_experts_choice_and_checkpointed_weights(which, trained, frozen):
    g = tiny_wan22(train_experts=which, gradient_checkpointing=True)
    names = {n for n, p in g.named_parameters() if p.requires_grad}  # what the trainer checkpoints
    assert {n.split(".")[0] for n in names} == trained and all("lora_" in n for n in names)
    assert len(g.trainable_parameters()) == len(names)
    for part in frozen:
        assert not any("lora_" in n for n, _ in getattr(g, part).named_parameters())
    assert all(getattr(g, part).gradient_checkpointing for part in trained)


def test_errors_name_the_problem(gen):
    c = tiny_wan22_components()
    with pytest.raises(ValueError, match="need both transformer_2 and boundary_ratio"):
        tiny_wan22(boundary_ratio=None)
    with pytest.raises(ValueError, match="train_experts='low'"):
        from vipo.generators.wan import WanGenerator

        WanGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]],
                                     height=64, width=64, num_frames=9, train_experts="low")
    cond = gen.encode_prompts(PROMPTS)
    with pytest.raises(ValueError, match="spans both Wan2.2 experts"):
        gen.velocity(torch.randn(2, 16, 3, 8, 8), torch.tensor([0.9, 0.5]), cond)


def test_bf16_experts_give_float32_velocity_near_fp32(gen):
    g16 = tiny_wan22(dtype="bfloat16")
    assert g16.transformer_2.blocks[0].attn1.to_q.base_layer.weight.dtype == torch.bfloat16
    assert g16.transformer_2.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in g16.trainable_parameters())
    x = torch.randn(2, 16, 3, 8, 8)
    for s in (0.95, 0.5):  # one sigma per expert
        sig = torch.full((2,), s)
        v16 = g16.velocity(x, sig, g16.encode_prompts(PROMPTS))
        v32 = gen.velocity(x, sig, gen.encode_prompts(PROMPTS))
        assert v16.dtype == torch.float32 and ((v16 - v32).norm() / v32.norm()).item() < 0.05


def test_from_pretrained_reads_experts_and_boundary(tmp_path, gen):  # gen: untrained, same weights
    from vipo.generators import GENERATORS

    from diffusers import WanPipeline

    c = tiny_wan22_components()
    WanPipeline(boundary_ratio=WAN22_BOUNDARY, **c).save_pretrained(str(tmp_path / "a14b"))
    g = GENERATORS.build("wan", path_or_id=str(tmp_path / "a14b"), height=64, width=64, num_frames=9,
                         max_sequence_length=TEXT_LEN, lora_rank=4, guidance_scale_2=3.0)
    assert g.boundary_ratio == WAN22_BOUNDARY and g.transformer_2 is not None and not g.expand_timesteps
    x = torch.randn(1, 16, 3, 8, 8)
    for s in (0.9, 0.3):
        sig = torch.full((1,), s)
        v = g.velocity(x, sig, g.encode_prompts(PROMPTS[:1]))
        assert torch.allclose(v, gen.velocity(x, sig, gen.encode_prompts(PROMPTS[:1])), atol=1e-5)

    WanPipeline(expand_timesteps=True, **tiny_wan22_5b_components()).save_pretrained(str(tmp_path / "ti2v"))
    g5 = GENERATORS.build("wan", path_or_id=str(tmp_path / "ti2v"), height=64, width=64, num_frames=9,
                          max_sequence_length=TEXT_LEN, lora_rank=4)
    assert g5.expand_timesteps and g5.transformer_2 is None and g5.latent_shape() == (48, 3, 4, 4)


def test_fsdp_shards_each_expert_as_its_own_root(tmp_path):
    """FSDP2 (one-process gloo group): both experts' blocks and roots are sharded, each step's forward and
    backward run through the expert that owns it, and checkpoint gathering sees whole tensors."""
    import torch.distributed as tdist

    from vipo import dist

    g = tiny_wan22()
    assert [type(r).__name__ for r in dist.shard_roots(g)] == ["WanTransformer3DModel"] * 2
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        units = dist.shard(g)
        assert units == 2 * (2 + 1)  # per expert: 2 blocks + the root
        named = {n: p for n, p in g.named_parameters() if p.requires_grad}
        assert all(dist.is_sharded(p) for p in named.values())
        cond = g.encode_prompts(PROMPTS)
        for s in (0.95, 0.5):  # one step per expert
            g.velocity(torch.randn(2, 16, 3, 8, 8), torch.full((2,), s), cond).square().mean().backward()
        assert all(p.grad is not None for p in named.values())
        full = {n: dist.full(p.detach()) for n, p in named.items()}
        assert {n.split(".")[0] for n in full} == {"transformer", "transformer_2"}
        assert all(not dist.is_sharded(t) for t in full.values())
    finally:
        tdist.destroy_process_group()


def test_attention_maps_work_on_ti2v_5b_and_refuse_two_experts():
    """psm.source=attention hooks `transformer` only: TI2V-5B (one transformer) gets maps on its latent grid; the
    two-expert A14B model is refused with a clear error instead of missing every low-noise step."""
    from vipo.attention import attention_capture
    from vipo.config import MapConfig

    rows = [p for p in PROMPTS for _ in range(2)]
    g = tiny_wan22_5b()
    with attention_capture(g, MapConfig(), rows, 3, "wan") as cap:
        rollout(g, PROMPTS, 2, g.sigmas(3), kind="flow_grpo", noise_level=0.7, reduction="position", micro_batch=2,
                gen=torch.Generator().manual_seed(0))
    maps = cap.maps(g.map_grid(), MapConfig())  # [4, 3, 4, 4]
    assert maps.shape == (4, 3, 4, 4) and maps.std() > 0
    with pytest.raises(ValueError, match="second \\(low-noise\\) expert"):
        attention_capture(tiny_wan22(), MapConfig(), rows, 3, "wan")


def test_a_preset_guidance_scale_reaches_a_tied_low_noise_expert():
    """guidance_scale_2=None ties the low-noise expert's CFG to guidance_scale, also when a VBench preset sets
    guidance_scale after building; an explicit guidance_scale_2 stays as given."""
    from vipo.eval.vbench_eval import apply_generator_settings

    tied, own = tiny_wan22(guidance_scale_2=None), tiny_wan22()
    assert (tied.guidance_scale, tied.guidance_scale_2) == (5.0, 5.0)
    assert apply_generator_settings(tied, {"guidance_scale": 7.0}) == {"guidance_scale": 7.0}
    assert apply_generator_settings(own, {"guidance_scale": 7.0}) == {"guidance_scale": 7.0}
    assert (tied.guidance_scale, tied.guidance_scale_2) == (7.0, 7.0)
    assert (own.guidance_scale, own.guidance_scale_2) == (7.0, 3.0)
    apply_generator_settings(tied, {"guidance_scale_2": 2.0})
    assert tied.expert(torch.full((1,), 0.3))[1] == 2.0 and tied.expert(torch.full((1,), 0.95))[1] == 7.0
