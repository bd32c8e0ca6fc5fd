"""Wan2.1 adapter on a tiny random WanTransformer3DModel (9 frames of 64x64 -> latents 16x3x8x8)."""

import pytest
import torch

from tiny_models import TEXT_LEN, euler, save_components, tiny_wan, tiny_wan_components

PROMPTS = ["a red ball", "a small dog in a house"]


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_wan()


@pytest.fixture(scope="module")
def cond(gen):
    return gen.encode_prompts(PROMPTS)


def test_video_latent_layout_and_errors(gen, cond):
    assert gen.is_video
    assert gen.latent_shape() == (16, 3, 8, 8)  # F_lat = (9 - 1) // 4 + 1 = 3
    assert gen.map_grid() == (3, 8, 8)  # maps are per latent frame
    assert tiny_wan(num_frames=33).latent_shape() == (16, 9, 8, 8)
    assert gen.latent_frame_of().tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="4k \\+ 1"):
        tiny_wan(num_frames=10)
    v = gen.velocity(torch.randn(2, 16, 3, 8, 8), torch.full((2,), 0.9), cond)
    assert v.shape == (2, 16, 3, 8, 8) and v.dtype == torch.float32
    with pytest.raises(ValueError, match="latents must be"):
        gen.velocity(torch.randn(2, 16, 8, 8), torch.full((2,), 0.9), cond)  # image latents
    # static shift 5: t = 0.5 -> 2.5 / 3 = 0.8333
    assert abs(gen.sigmas(2)[1].item() - 2.5 / 3) < 1e-6


def test_prompt_embeds_are_zero_past_the_prompt(gen, cond):
    ids = gen.tokenizers[0](PROMPTS[0]).input_ids  # 'a red ball </s>' -> 4 tokens
    assert len(ids) == 4
    e = cond["prompt_embeds"]  # [2, L, 32]
    assert e.shape == (2, TEXT_LEN, 32)
    assert e[0, :4].abs().sum() > 0 and torch.all(e[0, 4:] == 0)
    assert torch.all(cond["neg_prompt_embeds"][:, 1:] == 0)  # "" -> just </s>


def test_decoded_frames_follow_latent_frames(gen):
    """The causal VAE: changing latent frame k leaves every video frame before 4k-3 untouched, and
    changes frames 4k-3..4k -- the mapping ``latent_frame_of`` states."""
    z = torch.randn(1, 16, 3, 8, 8)
    with torch.no_grad():
        base = gen.decode(z)  # [1, 3, 9, 64, 64]
        assert base.shape == (1, 3, 9, 64, 64) and base.dtype == torch.float32
        for k, first in ((1, 1), (2, 5)):
            z2 = z.clone()
            z2[:, :, k] += 3.0
            diff = (gen.decode(z2) - base).abs().amax(dim=(0, 1, 3, 4))  # [9] per video frame
            assert torch.all(diff[:first] == 0)
            assert torch.all(diff[first:first + 4] > 1e-4)
            assert gen.latent_frame_of()[first:first + 4].tolist() == [k] * 4


def test_cfg_changes_output_and_no_grad_uncond(gen, cond):
    x, s = torch.randn(2, 16, 3, 8, 8), torch.full((2,), 0.7)
    v = gen.velocity(x, s, cond)
    gen.guidance_scale = 1.0
    try:
        v_c = gen.velocity(x, s, cond)
    finally:
        gen.guidance_scale = 5.0
    assert (v - v_c).abs().max() > 1e-4
    gen.cfg_no_grad_uncond = True
    try:
        assert torch.allclose(gen.velocity(x, s, cond), v, atol=1e-5)
    finally:
        gen.cfg_no_grad_uncond = False


def test_euler_matches_diffusers_wan_pipeline(gen):
    """Our Euler loop + decode == WanPipeline's video for the pipeline's own sigmas
    (timestep = 1000 sigma, CFG with "", the masked UMT5 embeddings, latents_mean/std)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=gen.tokenizers[0], text_encoder=gen.text_encoders[0], transformer=gen.transformer,
                       vae=gen.vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        video = pipe(PROMPTS, negative_prompt="", height=64, width=64, num_frames=9, num_inference_steps=3,
                     guidance_scale=5.0, latents=x0.clone(), max_sequence_length=TEXT_LEN,
                     output_type="pt").frames  # [2, 9, 3, 64, 64]
    sigmas = pipe.scheduler.sigmas.float()
    with torch.no_grad():
        ours = gen.decode(euler(gen, x0, sigmas, gen.encode_prompts(PROMPTS)))  # [2, 3, 9, 64, 64]
    assert ours.shape == (2, 3, 9, 64, 64)
    assert torch.allclose(ours, video.float().permute(0, 2, 1, 3, 4), atol=1e-4)


def test_gradients_reach_lora_only(gen, cond):
    gen.transformer.zero_grad(set_to_none=True)
    names = [n for n, p in gen.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("attn1.to_q" in n for n in names) and any("attn2.to_v" in n for n in names)
    gen.velocity(torch.randn(2, 16, 3, 8, 8), torch.full((2,), 0.4), cond).square().mean().backward()
    assert all(p.grad is not None for p in gen.trainable_parameters())
    assert all(p.grad is None for p in gen.parameters() if not p.requires_grad)
    gen.transformer.zero_grad(set_to_none=True)


def test_bf16_and_from_pretrained(tmp_path, gen, cond):
    g16 = tiny_wan(dtype="bfloat16", gradient_checkpointing=True)
    assert g16.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32  # kept fp32
    assert g16.transformer.blocks[0].attn1.to_q.base_layer.weight.dtype == torch.bfloat16
    x, s = torch.randn(2, 16, 3, 8, 8), torch.full((2,), 0.5)
    v16 = g16.velocity(x, s, g16.encode_prompts(PROMPTS))
    v32 = gen.velocity(x, s, cond)
    assert v16.dtype == torch.float32 and ((v16 - v32).norm() / v32.norm()).item() < 0.05
    v16.square().mean().backward()
    assert all(p.grad is not None for p in g16.trainable_parameters())

    folder = save_components(str(tmp_path / "wan"), tiny_wan_components())
    from vipo.generators.wan import WanGenerator

    g = WanGenerator.from_pretrained(folder, height=64, width=64, num_frames=9, max_sequence_length=TEXT_LEN,
                                     lora_rank=0)
    assert g.shift == 5.0
    assert torch.allclose(g.velocity(x, s, g.encode_prompts(PROMPTS)), v32, atol=1e-5)
