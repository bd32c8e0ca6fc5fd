"""FLUX adapter on a tiny random FluxTransformer2DModel (128x128 images, 16x16x16 latents)."""

import math

import pytest
import torch

from tiny_models import TEXT_LEN, euler, save_components, tiny_flux, tiny_flux_components

PROMPTS = ["a red cat", "a blue square on a grey photo"]


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    return tiny_flux()


@pytest.fixture(scope="module")
def cond(gen):
    return gen.encode_prompts(PROMPTS)


def test_velocity_shape_dtype_and_bad_shapes(gen, cond):
    assert gen.latent_shape() == (16, 16, 16)
    x = torch.randn(2, 16, 16, 16)
    v = gen.velocity(x, torch.full((2,), 0.7), cond)
    assert v.shape == x.shape and v.dtype == torch.float32 and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="latents must be"):
        gen.velocity(torch.randn(2, 64, 8, 8), torch.full((2,), 0.7), cond)  # packed-like channels
    with pytest.raises(ValueError, match="multiples of 2"):
        gen.velocity(torch.randn(2, 16, 15, 16), torch.full((2,), 0.7), cond)
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_flux(height=120)


def test_pack_round_trip_and_match_diffusers():
    from diffusers import FluxPipeline

    from vipo.generators.flux import image_ids
    from vipo.psm import pack_2x2, unpack_2x2

    x = torch.randn(3, 16, 6, 10)
    tokens = pack_2x2(x)
    assert tokens.shape == (3, 15, 64)
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, 3, 16, 6, 10))
    assert torch.equal(unpack_2x2(tokens, 6, 10), x)
    # diffusers' unpack takes pixel sizes: latent 6x10 <-> 48x80 pixels at vae scale 8
    assert torch.equal(FluxPipeline._unpack_latents(tokens, 48, 80, 8), x)
    assert torch.equal(image_ids(3, 5), FluxPipeline._prepare_latent_image_ids(1, 3, 5, "cpu", torch.float32))
    # token 7 of a 3x5 token grid is row 1, column 2; its first channel is x[:, 0, 2, 4]
    assert torch.equal(image_ids(3, 5)[7], torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(tokens[:, 7, 0], x[:, 0, 2, 4]) and torch.equal(tokens[:, 7, 3], x[:, 0, 3, 5])


def test_map_packs_like_latents_and_hot_region_lands_on_its_tokens(gen):
    assert gen.map_grid() == (16, 16)
    assert tuple(8 * n for n in gen.map_grid()) == (gen.height, gen.width)
    maps = torch.zeros(2, 16, 16)
    maps[:, 4:8, 6:10] = 1.0  # latent rows 4..7, cols 6..9 -> token rows 2..3, token cols 3..4
    packed = gen.pack_map(maps)  # [2, 64, 4]
    assert packed.shape == (2, 64, 4)
    hot = sorted(torch.nonzero(packed[0].sum(-1)).flatten().tolist())
    assert hot == [2 * 8 + 3, 2 * 8 + 4, 3 * 8 + 3, 3 * 8 + 4]
    assert torch.all(packed[0, hot] == 1.0)  # all four 2x2 slots of those tokens are hot
    from vipo.psm import pack_2x2

    lat = maps.unsqueeze(1).expand(2, 16, 16, 16)  # the same region hot in every latent channel
    lat_tokens = pack_2x2(lat).view(2, 64, 16, 4)  # [B, tokens, C, 2x2 slot]
    assert torch.equal(lat_tokens[:, :, 0, :], packed)  # same token and slot for map and latents


def test_guidance_embedding_changes_velocity(gen, cond):
    x = torch.randn(2, 16, 16, 16)
    s = torch.full((2,), 0.5)
    v35 = gen.velocity(x, s, cond)
    gen.guidance_scale = 1.0
    try:
        v1 = gen.velocity(x, s, cond)
    finally:
        gen.guidance_scale = 3.5
    assert (v35 - v1).abs().max() > 1e-4


def test_schedule_resolution_dependent_and_static():
    # 128x128 -> 8x8 = 64 tokens: mu = 0.5 + (64 - 256) * 0.65 / 3840 = 0.4675
    g = tiny_flux()
    a = math.exp(0.5 + (64 - 256) * 0.65 / 3840)
    t = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    assert torch.allclose(g.sigmas(4), a * t / (1 + (a - 1) * t), atol=1e-6)
    assert abs(g.sigmas(4)[2].item() - 0.61479) < 1e-4
    g.shift = 3.0  # DanceGRPO / official ViPO FLUX: static shift 3
    assert torch.allclose(g.sigmas(4), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]), atol=1e-6)


def test_euler_matches_diffusers_flux_pipeline(gen):
    """Same components, same noise: our unpacked Euler loop + decode == FluxPipeline's images.
    Checks the timestep convention (sigma, model x1000), guidance, ids, packing, the dynamic-shift
    schedule and the VAE scaling/shift factors at once."""
    from diffusers import FluxPipeline

    c = tiny_flux_components()
    pipe = FluxPipeline(scheduler=c["scheduler"], vae=gen.vae, text_encoder=gen.text_encoders[0],
                        tokenizer=gen.tokenizers[0], text_encoder_2=gen.text_encoders[1],
                        tokenizer_2=gen.tokenizers[1], transformer=gen.transformer)
    pipe.set_progress_bar_config(disable=True)
    x0 = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = pipe(PROMPTS, height=128, width=128, num_inference_steps=3, guidance_scale=3.5,
                      latents=FluxPipeline._pack_latents(x0, 2, 16, 16, 16), max_sequence_length=TEXT_LEN,
                      output_type="pt").images  # [2, 3, 128, 128]
    assert torch.allclose(pipe.scheduler.sigmas.float(), gen.sigmas(3), atol=1e-6)
    x = euler(gen, x0, gen.sigmas(3), gen.encode_prompts(PROMPTS))
    with torch.no_grad():
        ours = gen.decode(x)
    assert ours.shape == (2, 3, 128, 128) and ours.dtype == torch.float32
    assert 0.0 <= ours.min() and ours.max() <= 1.0
    assert torch.allclose(ours, images.float(), atol=1e-4)


def test_gradients_reach_lora_only(gen, cond):
    gen.transformer.zero_grad(set_to_none=True)
    params = gen.trainable_parameters()
    names = [n for n, p in gen.transformer.named_parameters() if p.requires_grad]
    assert params and all("lora_" in n for n in names)
    assert any(".to_q." in n for n in names) and any("add_k_proj" in n for n in names)
    v = gen.velocity(torch.randn(2, 16, 16, 16), torch.full((2,), 0.6), cond)
    v.square().mean().backward()
    assert all(p.grad is not None for p in params)
    assert any(p.grad.abs().sum() > 0 for n, p in gen.transformer.named_parameters() if "lora_B" in n)
    frozen = [p for p in gen.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
    gen.transformer.zero_grad(set_to_none=True)


def test_full_finetune_and_checkpointing():
    g = tiny_flux(lora_rank=0, gradient_checkpointing=True)
    n_all = sum(p.numel() for p in g.transformer.parameters())
    assert sum(p.numel() for p in g.trainable_parameters()) == n_all
    assert not any(p.requires_grad for m in (g.vae, *g.text_encoders) for p in m.parameters())
    assert g.transformer.gradient_checkpointing
    cond = g.encode_prompts(PROMPTS[:1])
    g.velocity(torch.randn(1, 16, 16, 16), torch.full((1,), 0.5), cond).sum().backward()
    assert all(p.grad is not None for p in g.trainable_parameters())


def test_prompt_cache_and_frozen_encoders(gen):
    gen.cache.clear()
    calls = []
    encode = gen.cache.encode_fn
    gen.cache.encode_fn = lambda ps: calls.append(list(ps)) or encode(ps)
    try:
        a = gen.encode_prompts(["a cat", "a dog", "a cat"])
        b = gen.encode_prompts(["a dog", "a cat"])
    finally:
        gen.cache.encode_fn = encode
    assert calls == [["a cat", "a dog"]]  # each prompt encoded once
    assert torch.equal(a["prompt_embeds"][0], a["prompt_embeds"][2])
    assert torch.equal(a["prompt_embeds"][1], b["prompt_embeds"][0])
    assert a["prompt_embeds"].shape == (3, TEXT_LEN, 32) and a["pooled_prompt_embeds"].shape == (3, 32)
    gen.train()
    assert gen.transformer.training and not any(m.training for m in (gen.vae, *gen.text_encoders))
    gen.eval()


def test_bf16_weights_return_float32_velocity(gen, cond):
    g16 = tiny_flux(dtype="bfloat16")
    assert g16.transformer.x_embedder.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in g16.trainable_parameters())  # adapters stay fp32
    x, s = torch.randn(2, 16, 16, 16), torch.full((2,), 0.5)
    v16 = g16.velocity(x, s, g16.encode_prompts(PROMPTS))
    v32 = gen.velocity(x, s, cond)
    assert v16.dtype == torch.float32
    assert ((v16 - v32).norm() / v32.norm()).item() < 0.05
    v16.square().mean().backward()
    assert all(p.grad is not None for p in g16.trainable_parameters())


def test_from_pretrained_folder(tmp_path, cond):
    folder = save_components(str(tmp_path / "flux"), tiny_flux_components())
    from vipo.generators import GENERATORS

    g = GENERATORS.build("flux", path_or_id=folder, height=128, width=128, max_sequence_length=TEXT_LEN, lora_rank=4)
    ref = tiny_flux()
    x, s = torch.randn(1, 16, 16, 16), torch.full((1,), 0.3)
    v = g.velocity(x, s, g.encode_prompts(PROMPTS[:1]))
    assert torch.allclose(v, ref.velocity(x, s, ref.encode_prompts(PROMPTS[:1])), atol=1e-5)
    assert g.shift is None  # FLUX.1-dev scheduler: dynamic (resolution-dependent) shifting
    from diffusers import FlowMatchEulerDiscreteScheduler

    FlowMatchEulerDiscreteScheduler(shift=1.0).save_pretrained(folder + "/scheduler")  # like FLUX.1-schnell
    assert GENERATORS.build("flux", path_or_id=folder, height=128, width=128, lora_rank=4).shift == 1.0
    with pytest.raises(FileNotFoundError, match="no/such/flux"):
        GENERATORS.build("flux", path_or_id="/no/such/flux")


def test_prompt_cache_is_lru_bounded():
    from vipo.generators._diffusers_utils import PromptCache

    calls = []

    def encode(ps):
        calls.append(list(ps))
        return {"e": torch.tensor([[float(len(p))] for p in ps])}  # [B, 1]: the prompt's length

    cache = PromptCache(encode, max_prompts=2)
    assert cache.get(["ab", "abc"])["e"].flatten().tolist() == [2.0, 3.0]
    assert cache.get(["ab"])["e"].flatten().tolist() == [2.0]  # hit; "ab" becomes the most recent
    cache.get(["abcd"])  # evicts "abc", the least recently used
    assert list(cache.store) == ["ab", "abcd"]
    cache.get(["abc", "ab"])
    assert calls == [["ab", "abc"], ["abcd"], ["abc"]]
    with pytest.raises(ValueError):
        cache.get([])
