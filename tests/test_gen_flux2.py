"""FLUX.2 adapter on a tiny random Flux2Transformer2DModel (128x128 images, latents 4x16x16, 8x8 tokens)."""

import pytest
import torch

from tiny_dit_models import hot_region_on_tokens, FLUX2_LAYERS, FLUX2_TEXT_LEN, tiny_flux2, tiny_flux2_components
from tiny_models import ours_against_pipeline, save_components

PROMPTS = ["a red cat", "a blue square on a grey photo"]


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_flux2()


@pytest.fixture(scope="module")
def cond(gen):
    return gen.encode_prompts(PROMPTS)


def test_euler_matches_diffusers_flux2_pipeline(gen):
    """Same components and noise: our Euler loop on un-patchified latents + decode == Flux2Pipeline's images.
    Checks the chat prompt and stacked hidden states, timestep = sigma, embedded guidance, 4-axis ids,
    patchify + pack, the empirical-mu schedule and the batch-norm statistics in decode at once."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    pipe = Flux2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(gen.scheduler_config), vae=gen.vae,
                         text_encoder=gen.text_encoders[0], tokenizer=gen.tokenizers[0], transformer=gen.transformer)
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = pipe(prompt=PROMPTS, height=128, width=128, num_inference_steps=3, guidance_scale=4.0,
                      latents=Flux2Pipeline._patchify_latents(x0), max_sequence_length=FLUX2_TEXT_LEN,
                      text_encoder_out_layers=FLUX2_LAYERS, output_type="pt").images  # [2, 3, 128, 128]
    assert images.shape == (2, 3, 128, 128)
    ours_against_pipeline(gen, pipe, x0, images, PROMPTS, 3)
    assert (images[0] - images[1]).abs().max() > 1e-3  # the prompts matter


def test_tokens_are_packed_patches_and_hot_map_region_lands_on_its_tokens(gen):
    from diffusers import Flux2Pipeline

    from vipo.psm import pack_2x2

    x = torch.randn(2, 4, 6, 10)
    patches = Flux2Pipeline._patchify_latents(x)  # [2, 16, 3, 5]
    assert torch.equal(pack_2x2(x), Flux2Pipeline._pack_latents(patches))  # [2, 15, 16]
    assert torch.equal(Flux2Pipeline._unpatchify_latents(patches), x)
    ids = Flux2Pipeline._prepare_latent_ids(patches)[0]  # [15, 4]
    assert ids[7].tolist() == [0, 1, 2, 0]  # token 7 of the 3x5 grid: row 1, column 2
    maps, packed = hot_region_on_tokens(gen)  # [2, 16, 16], [2, 64, 4]
    lat = Flux2Pipeline._pack_latents(Flux2Pipeline._patchify_latents(maps.unsqueeze(1).expand(2, 4, 16, 16)))
    assert torch.equal(lat.view(2, 64, 4, 4)[:, :, 0, :], packed)  # the pipeline's own tokens, slot for slot


def test_guidance_embedding_and_schedule(gen, cond):
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    x, s = torch.randn(2, 4, 16, 16), torch.full((2,), 0.5)
    v4 = gen.velocity(x, s, cond)
    gen.guidance_scale = 1.0
    try:
        assert (gen.velocity(x, s, cond) - v4).abs().max() > 1e-4
    finally:
        gen.guidance_scale = 4.0
    mu = compute_empirical_mu(64, 4)  # 64 tokens, 4 steps; the scheduler's exponential time shift
    t = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    want = torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + (1 / t - 1))
    assert torch.allclose(gen.sigmas(4)[:4], want.float(), atol=1e-5) and gen.sigmas(4)[-1] == 0


def test_gradients_reach_lora_only_and_full_finetune(gen, cond):
    gen.transformer.zero_grad(set_to_none=True)
    names = [n for n, p in gen.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("to_qkv_mlp_proj" in n for n in names) and any("add_k_proj" in n for n in names)
    gen.velocity(torch.randn(2, 4, 16, 16), torch.full((2,), 0.6), cond).square().mean().backward()
    no_grad = {n.split(".lora_")[0] for n, p in gen.transformer.named_parameters()
               if p.requires_grad and p.grad is None}
    assert no_grad == set()
    assert all(p.grad is None for p in gen.parameters() if not p.requires_grad)
    gen.transformer.zero_grad(set_to_none=True)

    g = tiny_flux2(lora_rank=0, gradient_checkpointing=True)
    assert sum(p.numel() for p in g.trainable_parameters()) == sum(p.numel() for p in g.transformer.parameters())
    assert g.transformer.gradient_checkpointing
    assert not any(p.requires_grad for m in (g.vae, *g.text_encoders) for p in m.parameters())
    g.velocity(torch.randn(1, 4, 16, 16), torch.full((1,), 0.5), g.encode_prompts(PROMPTS[:1])).sum().backward()
    assert g.transformer.x_embedder.weight.grad is not None


def test_bf16_weights_return_float32_velocity(gen, cond):
    g16 = tiny_flux2(dtype="bfloat16")
    assert g16.transformer.x_embedder.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in g16.trainable_parameters())
    x, s = torch.randn(2, 4, 16, 16), torch.full((2,), 0.5)
    v16 = g16.velocity(x, s, g16.encode_prompts(PROMPTS))
    v32 = gen.velocity(x, s, cond)
    assert v16.dtype == torch.float32 and ((v16 - v32).norm() / v32.norm()).item() < 0.05


def test_from_pretrained_folder_and_prompt_cache(tmp_path, gen, cond):
    from vipo.generators import GENERATORS

    folder = save_components(str(tmp_path / "flux2"), tiny_flux2_components())
    g = GENERATORS.build("flux2", path_or_id=folder, height=128, width=128, max_sequence_length=FLUX2_TEXT_LEN,
                         text_encoder_layers=list(FLUX2_LAYERS), lora_rank=4)
    x, s = torch.randn(2, 4, 16, 16), torch.full((2,), 0.3)
    assert torch.allclose(g.velocity(x, s, g.encode_prompts(PROMPTS)), gen.velocity(x, s, cond), atol=1e-5)
    gen.cache.clear()
    alone = gen.encode_prompts(PROMPTS[1:])  # padded to max_sequence_length: one by one == batched
    assert torch.allclose(alone["prompt_embeds"][0], cond["prompt_embeds"][1], atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_flux2(width=136)
