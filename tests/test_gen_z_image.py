"""Z-Image adapter on a tiny random ZImageTransformer2DModel (128x128 images, 16x16x16 latents)."""

import pytest
import torch

from tiny_dit_models import hot_region_on_tokens, ZIMAGE_TEXT_LEN, tiny_z_image, tiny_z_image_components
from tiny_models import ours_against_pipeline, save_components

PROMPTS = ["a red cat", "a blue square on a grey photo"]  # different lengths: variable caption lists


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_z_image()


@pytest.fixture(scope="module")
def cond(gen):
    return gen.encode_prompts(PROMPTS)


def pipeline(g):
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(g.scheduler_config), vae=g.vae,
                          text_encoder=g.text_encoders[0], tokenizer=g.tokenizers[0], transformer=g.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance,truncation,normalization", [(3.0, 1.0, 0.0), (0.0, 1.0, 0.0), (3.0, 0.3, 1.2)])
def test_euler_matches_diffusers_z_image_pipeline(gen, guidance, truncation, normalization):
    """Same components and noise: our Euler loop + decode == ZImagePipeline's images, with guidance (Z-Image),
    without (Z-Image-Turbo), and with guidance truncated late and its norm capped. Checks the chat template and
    valid-token captions, time 1 - sigma and the negated output, the guidance form, the shifted schedule and
    the VAE factors at once. (The pipeline rewrites the prompt list it is given, so it gets a copy.)"""
    gen.guidance_scale, gen.cfg_truncation, gen.cfg_normalization = guidance, truncation, normalization
    try:
        pipe = pipeline(gen)
        x0 = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            images = pipe(list(PROMPTS), negative_prompt=["", ""], height=128, width=128, num_inference_steps=3,
                          guidance_scale=guidance, cfg_truncation=truncation, cfg_normalization=normalization,
                          latents=x0.clone(), max_sequence_length=ZIMAGE_TEXT_LEN, output_type="pt").images
        assert images.shape == (2, 3, 128, 128)
        ours_against_pipeline(gen, pipe, x0, images, PROMPTS, 3)
    finally:
        gen.guidance_scale, gen.cfg_truncation, gen.cfg_normalization = 3.0, 1.0, 0.0


def test_guidance_options_change_the_velocity(gen, cond):
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.5)
    v3 = gen.velocity(x, s, cond)
    gen.guidance_scale = 0.0
    try:
        v0 = gen.velocity(x, s, {k: v for k, v in cond.items() if not k.startswith("neg_")})  # no negative needed
    finally:
        gen.guidance_scale = 3.0
    assert (v3 - v0).abs().max() > 1e-4
    gen.cfg_truncation = 0.4  # 1 - sigma = 0.5 > 0.4: guidance off at this step
    try:
        assert torch.allclose(gen.velocity(x, s, cond), v0, atol=1e-6)
    finally:
        gen.cfg_truncation = 1.0
    gen.cfg_normalization = 1.0  # the guided norm capped at the conditional norm
    try:
        capped = gen.velocity(x, s, cond)
    finally:
        gen.cfg_normalization = 0.0
    assert torch.allclose(capped.flatten(1).norm(dim=1), v0.flatten(1).norm(dim=1), rtol=1e-5)


def test_hot_map_region_lands_on_the_transformers_own_patches(gen):
    """pack_map against the transformer's own patchify of the map as a one-channel latent."""
    maps, packed = hot_region_on_tokens(gen)  # [2, 16, 16], [2, 64, 4]
    ramp = torch.arange(256.0).view(1, 16, 16)  # every position distinct
    own, _, grid = gen.transformer._patchify_image(ramp.view(1, 1, 16, 16), 2, 1)  # [64, 4]
    assert grid == (1, 8, 8) and torch.equal(own, gen.pack_map(ramp)[0])


def test_gradients_reach_lora_only_and_full_finetune(gen, cond):
    gen.transformer.zero_grad(set_to_none=True)
    names = [n for n, p in gen.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("context_refiner" in n for n in names) and any("feed_forward.w2" in n for n in names)
    gen.velocity(torch.randn(2, 16, 16, 16), torch.full((2,), 0.6), cond).square().mean().backward()
    assert all(p.grad is not None for p in gen.trainable_parameters())
    assert all(p.grad is None for p in gen.parameters() if not p.requires_grad)
    gen.transformer.zero_grad(set_to_none=True)

    g = tiny_z_image(lora_rank=0, gradient_checkpointing=True)
    assert sum(p.numel() for p in g.trainable_parameters()) == sum(p.numel() for p in g.transformer.parameters())
    assert g.transformer.gradient_checkpointing
    g.velocity(torch.randn(1, 16, 16, 16), torch.full((1,), 0.5), g.encode_prompts(PROMPTS[:1])).sum().backward()
    assert g.transformer.layers[0].attention.to_q.weight.grad is not None


def test_bf16_weights_return_float32_velocity(gen, cond):
    g16 = tiny_z_image(dtype="bfloat16")
    assert g16.transformer.layers[0].attention.to_q.base_layer.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in g16.trainable_parameters())
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.5)
    v16 = g16.velocity(x, s, g16.encode_prompts(PROMPTS))
    v32 = gen.velocity(x, s, cond)
    assert v16.dtype == torch.float32 and ((v16 - v32).norm() / v32.norm()).item() < 0.05


def test_from_pretrained_folder_and_prompt_cache(tmp_path, gen, cond):
    from vipo.generators import GENERATORS

    folder = save_components(str(tmp_path / "zimage"), tiny_z_image_components())
    g = GENERATORS.build("z_image", path_or_id=folder, height=128, width=128, max_sequence_length=ZIMAGE_TEXT_LEN,
                         lora_rank=4, guidance_scale=3.0)
    assert g.scheduler_config["shift"] == 3.0
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.3)
    assert torch.allclose(g.velocity(x, s, g.encode_prompts(PROMPTS)), gen.velocity(x, s, cond), atol=1e-5)
    gen.cache.clear()
    alone = gen.encode_prompts(PROMPTS[1:])
    assert torch.allclose(alone["prompt_embeds"][0], cond["prompt_embeds"][1], atol=1e-6)
    assert cond["prompt_mask"].sum(1).tolist()[0] < cond["prompt_mask"].sum(1).tolist()[1]
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_z_image(height=100)
