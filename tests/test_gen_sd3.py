"""SD3.5 adapter on a tiny random SD3Transformer2DModel (128x128 images, 16x16x16 latents)."""

import numpy as np
import pytest
import torch

from tiny_models import TEXT_LEN, ours_against_pipeline, save_components, tiny_sd3, tiny_sd3_components

PROMPTS = ["a red cat", "a green triangle on a white photo"]


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_sd3()


@pytest.fixture(scope="module")
def cond(gen):
    return gen.encode_prompts(PROMPTS)


def test_shapes_schedule_and_errors(gen, cond):
    assert gen.latent_shape() == (16, 16, 16) and gen.map_grid() == (16, 16)
    assert cond["prompt_embeds"].shape == (2, 77 + TEXT_LEN, 32)  # CLIP tokens then T5 tokens
    assert cond["pooled_prompt_embeds"].shape == (2, 32)  # CLIP-L (16) + CLIP-G (16) projections
    assert cond["neg_prompt_embeds"].shape == cond["prompt_embeds"].shape
    v = gen.velocity(torch.randn(2, 16, 16, 16), torch.full((2,), 0.8), cond)
    assert v.shape == (2, 16, 16, 16) and v.dtype == torch.float32
    # static shift 3: t = 0.75 -> 2.25 / 2.5 = 0.9; t = 0.5 -> 1.5 / 2 = 0.75; t = 0.25 -> 0.75 / 1.5 = 0.5
    assert torch.allclose(gen.sigmas(4), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="latents must be"):
        gen.velocity(torch.randn(2, 4, 16, 16), torch.full((2,), 0.8), cond)
    with pytest.raises(ValueError, match="negative-prompt"):
        gen.velocity(torch.randn(2, 16, 16, 16), torch.full((2,), 0.8),
                     {k: v for k, v in cond.items() if not k.startswith("neg_")})


def test_cfg_formula_and_no_grad_uncond(gen, cond):
    """v = v_u + g (v_c - v_u); with cfg_no_grad_uncond the value is unchanged and the gradient is
    g times the conditional branch's gradient (the unconditional branch carries none)."""
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.6)
    w = torch.randn(2, 16, 16, 16)
    lora_b = [p for n, p in gen.transformer.named_parameters() if "lora_B" in n]
    with torch.no_grad():  # make the adapters non-zero so that gradients w.r.t. A and B both exist
        for p in lora_b:
            p.normal_(0, 0.02)
    try:
        g = gen.guidance_scale
        v = gen.velocity(x, s, cond)
        gen.guidance_scale = 1.0
        v_c = gen.velocity(x, s, cond)
        (grad_c,) = torch.autograd.grad((v_c * w).sum(), lora_b[:1])
        v_u = gen.velocity(x, s, {k[4:]: t for k, t in cond.items() if k.startswith("neg_")})
        gen.guidance_scale = g
        assert torch.allclose(v, v_u + g * (v_c - v_u), atol=1e-5)
        assert (v - v_c).abs().max() > 1e-4  # guidance changes the output
        gen.cfg_no_grad_uncond = True
        v_ng = gen.velocity(x, s, cond)
        (grad_ng,) = torch.autograd.grad((v_ng * w).sum(), lora_b[:1])
        assert torch.allclose(v_ng, v, atol=1e-5)
        assert torch.allclose(grad_ng, g * grad_c, rtol=1e-4, atol=1e-7)
    finally:
        gen.guidance_scale, gen.cfg_no_grad_uncond = 4.5, False
        with torch.no_grad():
            for p in lora_b:
                p.zero_()


def test_euler_matches_diffusers_sd3_pipeline(gen):
    """Our Euler loop + decode == StableDiffusion3Pipeline (timestep = 1000 sigma, CFG with "", the
    CLIP/T5 embedding layout, shift-3 schedule, VAE scaling/shift factors)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    te, tok = gen.text_encoders, gen.tokenizers
    pipe = StableDiffusion3Pipeline(transformer=gen.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=gen.vae, text_encoder=te[0], tokenizer=tok[0], text_encoder_2=te[1],
                                    tokenizer_2=tok[1], text_encoder_3=te[2], tokenizer_3=tok[2])
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    n = 3
    with torch.no_grad():
        images = pipe(PROMPTS, height=128, width=128, num_inference_steps=n, guidance_scale=4.5,
                      sigmas=list(np.linspace(1.0, 0.0, n + 1)[:-1]), latents=x0.clone(),
                      max_sequence_length=TEXT_LEN, output_type="pt").images  # [2, 3, 128, 128]
    assert images.shape == (2, 3, 128, 128)
    ours = ours_against_pipeline(gen, pipe, x0, images, PROMPTS, n)
    assert 0.0 <= ours.min() and ours.max() <= 1.0


def test_gradients_reach_lora_only(gen, cond):
    gen.transformer.zero_grad(set_to_none=True)
    names = [n for n, p in gen.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("attn.add_q_proj" in n for n in names)
    gen.velocity(torch.randn(2, 16, 16, 16), torch.full((2,), 0.4), cond).square().mean().backward()
    assert all(p.grad is not None for p in gen.trainable_parameters())
    assert all(p.grad is None for p in gen.parameters() if not p.requires_grad)
    gen.transformer.zero_grad(set_to_none=True)


def test_bf16_and_from_pretrained(tmp_path, gen, cond):
    g16 = tiny_sd3(dtype="bfloat16", cfg_no_grad_uncond=True)
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.5)
    v16 = g16.velocity(x, s, g16.encode_prompts(PROMPTS))
    v32 = gen.velocity(x, s, cond)
    assert v16.dtype == torch.float32 and ((v16 - v32).norm() / v32.norm()).item() < 0.05

    folder = save_components(str(tmp_path / "sd3"), tiny_sd3_components())
    from vipo.generators.sd3 import SD3Generator

    g = SD3Generator.from_pretrained(folder, height=128, width=128, max_sequence_length=TEXT_LEN, lora_rank=4)
    assert g.shift == 3.0  # read from scheduler/scheduler_config.json
    v = g.velocity(x, s, g.encode_prompts(PROMPTS))
    assert torch.allclose(v, v32, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="missing-sd3"):
        SD3Generator.from_pretrained(str(tmp_path / "missing-sd3"))
