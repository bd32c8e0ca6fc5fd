"""Qwen-Image adapter on a tiny random QwenImageTransformer2DModel (128x128 images, 16x16x16 latents)."""

import pytest
import torch

from tiny_dit_models import hot_region_on_tokens, QWEN_TEXT_LEN, tiny_qwen_image, tiny_qwen_image_components
from tiny_models import ours_against_pipeline, save_components

PROMPTS = ["a red cat", "a blue square on a grey photo"]  # different lengths: a real text mask


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_qwen_image()


@pytest.fixture(scope="module")
def cond(gen):
    return gen.encode_prompts(PROMPTS)


def test_euler_matches_diffusers_qwen_image_pipeline(gen):
    """Same components and noise: our unpacked Euler loop + decode == QwenImagePipeline's images. Checks the
    template and dropped tokens, the text mask, timestep = sigma, packing and img_shapes, true CFG with the norm
    rescale, the shifted and terminal-stretched schedule and the VAE's latents_mean/std at once."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(gen.scheduler_config),
                             vae=gen.vae, text_encoder=gen.text_encoders[0], tokenizer=gen.tokenizers[0],
                             transformer=gen.transformer)
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = pipe(PROMPTS, negative_prompt=[" ", " "], true_cfg_scale=4.0, height=128, width=128,
                      num_inference_steps=3, latents=QwenImagePipeline._pack_latents(x0, 2, 16, 16, 16),
                      max_sequence_length=QWEN_TEXT_LEN, output_type="pt").images  # [2, 3, 128, 128]
    assert images.shape == (2, 3, 128, 128)
    assert gen.sigmas(3)[-2].item() == pytest.approx(0.02, abs=1e-6)  # shift_terminal
    ours_against_pipeline(gen, pipe, x0, images, PROMPTS, 3)
    assert (images[0] - images[1]).abs().max() > 1e-3  # the prompts matter


def test_packing_matches_pipeline_and_hot_map_region_lands_on_its_tokens(gen):
    from diffusers import QwenImagePipeline

    from vipo.psm import pack_2x2

    x = torch.randn(2, 16, 6, 10)
    assert torch.equal(pack_2x2(x), QwenImagePipeline._pack_latents(x, 2, 16, 6, 10))
    unpacked = QwenImagePipeline._unpack_latents(pack_2x2(x), 48, 80, 8)  # [B, C, 1, H, W]
    assert torch.equal(unpacked[:, :, 0], x)
    maps, packed = hot_region_on_tokens(gen)  # [2, 16, 16], [2, 64, 4]
    lat = pack_2x2(maps.unsqueeze(1).expand(2, 16, 16, 16)).view(2, 64, 16, 4)  # [B, tokens, C, slot]
    assert torch.equal(lat[:, :, 0, :], packed)  # the latents' channels of a token sit in the same slots


def test_true_cfg_is_renormalised_per_token(gen, cond):
    from vipo.psm import pack_2x2

    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.6)
    v = gen.velocity(x, s, cond)
    gen.guidance_scale = 1.0
    try:
        v_c = gen.velocity(x, s, cond)
        v_u = gen.velocity(x, s, {"prompt_embeds": cond["neg_prompt_embeds"], "prompt_mask": cond["neg_prompt_mask"]})
    finally:
        gen.guidance_scale = 4.0
    comb = pack_2x2(v_u + 4.0 * (v_c - v_u))  # [B, 64, 64]
    want = comb * pack_2x2(v_c).norm(dim=-1, keepdim=True) / comb.norm(dim=-1, keepdim=True)
    assert torch.allclose(pack_2x2(v), want, atol=1e-5)
    assert torch.allclose(pack_2x2(v).norm(dim=-1), pack_2x2(v_c).norm(dim=-1), atol=1e-4)
    gen.cfg_no_grad_uncond = True
    try:
        assert torch.allclose(gen.velocity(x, s, cond), v, atol=1e-5)
    finally:
        gen.cfg_no_grad_uncond = False


def test_prompts_cache_one_by_one_and_padding_is_inert(gen, cond):
    """A prompt encoded alone equals its row of a batch; its velocity next to a longer prompt equals its
    velocity alone (the text mask and the trim to the longest prompt)."""
    gen.cache.clear()
    alone = gen.encode_prompts(PROMPTS[:1])
    assert torch.equal(alone["prompt_mask"][0], cond["prompt_mask"][0])
    assert torch.allclose(alone["prompt_embeds"][0], cond["prompt_embeds"][0], atol=1e-6)
    assert cond["prompt_mask"].sum(1).tolist() == [8, 12]  # 'a red cat' + the 5 template tokens after it
    assert torch.all(cond["prompt_embeds"][0, 8:] == 0)
    x, s = torch.randn(1, 16, 16, 16), torch.full((1,), 0.4)
    v_alone = gen.velocity(x, s, alone)
    v_batch = gen.velocity(torch.cat([x, x]), s.expand(2), cond)[:1]
    assert torch.allclose(v_alone, v_batch, atol=1e-5)


def test_gradients_reach_lora_only_and_full_finetune(gen, cond):
    gen.transformer.zero_grad(set_to_none=True)
    names = [n for n, p in gen.transformer.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any("attn.add_k_proj" in n for n in names) and any("img_mlp.net.2" in n for n in names)
    gen.velocity(torch.randn(2, 16, 16, 16), torch.full((2,), 0.6), cond).square().mean().backward()
    no_grad = {n.split(".lora_")[0] for n, p in gen.transformer.named_parameters()
               if p.requires_grad and p.grad is None}
    # only the last block's text-stream outputs, which the model discards, get no gradient
    assert no_grad == {"transformer_blocks.1.attn.to_add_out", "transformer_blocks.1.txt_mlp.net.0.proj",
                       "transformer_blocks.1.txt_mlp.net.2"}
    assert all(p.grad is None for p in gen.parameters() if not p.requires_grad)
    gen.transformer.zero_grad(set_to_none=True)

    g = tiny_qwen_image(lora_rank=0, gradient_checkpointing=True)
    assert sum(p.numel() for p in g.trainable_parameters()) == sum(p.numel() for p in g.transformer.parameters())
    assert g.transformer.gradient_checkpointing
    g.velocity(torch.randn(1, 16, 16, 16), torch.full((1,), 0.5), g.encode_prompts(PROMPTS[:1])).sum().backward()
    assert g.transformer.img_in.weight.grad is not None
    assert g.transformer.transformer_blocks[0].attn.to_q.weight.grad is not None


def test_bf16_weights_return_float32_velocity(gen, cond):
    g16 = tiny_qwen_image(dtype="bfloat16")
    assert g16.transformer.img_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in g16.trainable_parameters())
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.5)
    v16 = g16.velocity(x, s, g16.encode_prompts(PROMPTS))
    v32 = gen.velocity(x, s, cond)
    assert v16.dtype == torch.float32 and ((v16 - v32).norm() / v32.norm()).item() < 0.05


def test_from_pretrained_folder_and_static_shift(tmp_path, gen, cond):
    from vipo.generators import GENERATORS

    folder = save_components(str(tmp_path / "qwen"), tiny_qwen_image_components())
    g = GENERATORS.build("qwen_image", path_or_id=folder, height=128, width=128,
                         max_sequence_length=QWEN_TEXT_LEN, lora_rank=4)
    assert g.scheduler_config["shift_terminal"] == 0.02 and torch.allclose(g.sigmas(5), gen.sigmas(5))
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.3)
    assert torch.allclose(g.velocity(x, s, g.encode_prompts(PROMPTS)), gen.velocity(x, s, cond), atol=1e-5)
    g.shift = 3.0  # a static shift instead of the scheduler's
    assert torch.allclose(g.sigmas(4), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_qwen_image(height=120)
    with pytest.raises(ValueError, match="1 text encoder"):
        c = tiny_qwen_image_components()
        from vipo.generators.qwen_image import QwenImageGenerator

        QwenImageGenerator.from_components(c["transformer"], c["vae"], [], [c["tokenizer"]])
