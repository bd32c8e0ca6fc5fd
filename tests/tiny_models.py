"""Tiny randomly initialised FLUX / SD3.5 / Wan2.1 / Wan2.2 generators for tests (no downloads).

Every component is a real diffusers / transformers class built from a small config, the way
diffusers' own pipeline tests build them. Tokenizers are word-level ``tokenizers`` models wrapped
in ``PreTrainedTokenizerFast`` (they round-trip through ``save_pretrained`` / ``AutoTokenizer``);
CLIP-style ones add <s> ... </s> and the CLIP configs point ``eos_token_id`` at </s>, so the pooled
output is read at the end token as in real CLIP.

    tiny_flux(), tiny_sd3(), tiny_wan()      ready Generator instances (LoRA rank 4 unless overridden)
    tiny_wan22(), tiny_wan22_5b()            Wan2.2 A14B-style two experts; TI2V-5B-style 48-channel VAE
    tiny_*_components()                      the raw components (dict) for pipelines / from_components
    save_components(folder, components)      a diffusers-style folder for ``from_pretrained`` tests
"""

from __future__ import annotations

import os
from typing import Dict

import torch

WORDS = ("a an the of on in with and photo picture red green blue yellow white black grey cat dog "
         "circle square triangle star ball car tree house big small").split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]  # ids 0, 1, 2, 3
VOCAB = len(SPECIALS) + len(WORDS)
TEXT_LEN = 16  # T5 / UMT5 tokens used by the tiny generators


def tiny_tokenizer(model_max_length: int = 77, bos: bool = True):
    """Word-level tokenizer: pad=0, unk=1, <s>=2, </s>=3 (</s> always appended; <s> if ``bos``)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = "<s> $A </s>" if bos else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<s>", 2), ("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=model_max_length)


def tiny_clip(hidden: int = 32, projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_t5(d_model: int = 32, umt5: bool = False, seed: int = 0):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
              relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=3)
    if umt5:
        return UMT5EncoderModel(UMT5Config(**kw)).eval()
    return T5EncoderModel(T5Config(**kw)).eval()


def tiny_vae2d(scaling_factor: float = 0.3611, shift_factor: float = 0.1159, seed: int = 0):
    """An 8x-downsampling, 16-channel AutoencoderKL (4 blocks of 8 channels), ~27k parameters."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=16, norm_num_groups=4, layers_per_block=1, use_quant_conv=False,
                         use_post_quant_conv=False, scaling_factor=scaling_factor, shift_factor=shift_factor).eval()


# ----------------------------------------------------------------------------- FLUX
def tiny_flux_components(seed: int = 0) -> Dict[str, object]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return dict(transformer=transformer, vae=tiny_vae2d(seed=seed + 1), scheduler=scheduler,
                text_encoder=tiny_clip(32, seed=seed + 2), tokenizer=tiny_tokenizer(77),
                text_encoder_2=tiny_t5(32, seed=seed + 3), tokenizer_2=tiny_tokenizer(TEXT_LEN, bos=False))


def tiny_flux(seed: int = 0, **options):
    from vipo.generators.flux import FluxGenerator

    c = tiny_flux_components(seed)
    opts = dict(height=128, width=128, max_sequence_length=TEXT_LEN, lora_rank=4)
    opts.update(options)
    return FluxGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"], c["text_encoder_2"]],
                                         [c["tokenizer"], c["tokenizer_2"]], **opts)


# ----------------------------------------------------------------------------- SD3.5
def tiny_sd3_components(seed: int = 0) -> Dict[str, object]:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16,
                                        qk_norm="rms_norm", dual_attention_layers=(0,))
    return dict(transformer=transformer, vae=tiny_vae2d(1.5305, 0.0609, seed=seed + 1),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                text_encoder=tiny_clip(16, projection=True, seed=seed + 2), tokenizer=tiny_tokenizer(77),
                text_encoder_2=tiny_clip(16, projection=True, seed=seed + 3), tokenizer_2=tiny_tokenizer(77),
                text_encoder_3=tiny_t5(32, seed=seed + 4), tokenizer_3=tiny_tokenizer(TEXT_LEN, bos=False))


def tiny_sd3(seed: int = 0, **options):
    from vipo.generators.sd3 import SD3Generator

    c = tiny_sd3_components(seed)
    opts = dict(height=128, width=128, max_sequence_length=TEXT_LEN, lora_rank=4, guidance_scale=4.5)
    opts.update(options)
    return SD3Generator.from_components(
        c["transformer"], c["vae"], [c["text_encoder"], c["text_encoder_2"], c["text_encoder_3"]],
        [c["tokenizer"], c["tokenizer_2"], c["tokenizer_3"]], **opts)


# ----------------------------------------------------------------------------- Wan2.1
def tiny_wan_components(seed: int = 0) -> Dict[str, object]:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    transformer = _tiny_wan_transformer()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    return dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                text_encoder=tiny_t5(32, umt5=True, seed=seed + 2), tokenizer=tiny_tokenizer(TEXT_LEN, bos=False))


def tiny_wan(seed: int = 0, **options):
    from vipo.generators.wan import WanGenerator

    c = tiny_wan_components(seed)
    opts = dict(height=64, width=64, num_frames=9, max_sequence_length=TEXT_LEN, lora_rank=4, guidance_scale=5.0)
    opts.update(options)
    return WanGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]], **opts)


# ----------------------------------------------------------------------------- Wan2.2
WAN22_BOUNDARY = 0.875  # the boundary ratio of Wan2.2-T2V-A14B (and of diffusers' tests)


def _tiny_wan_transformer(channels: int = 16):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                 in_channels=channels, out_channels=channels, text_dim=32, freq_dim=256, ffn_dim=32,
                                 num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=32)


def tiny_wan22_components(seed: int = 0) -> Dict[str, object]:
    """Wan2.1's tiny parts plus a second (low-noise) expert with its own weights."""
    c = tiny_wan_components(seed)
    torch.manual_seed(seed + 10)
    c["transformer_2"] = _tiny_wan_transformer()
    return c


def tiny_wan22(seed: int = 0, **options):
    from vipo.generators.wan import WanGenerator

    c = tiny_wan22_components(seed)
    opts = dict(height=64, width=64, num_frames=9, max_sequence_length=TEXT_LEN, lora_rank=4, guidance_scale=5.0,
                guidance_scale_2=3.0, boundary_ratio=WAN22_BOUNDARY)
    opts.update(options)
    return WanGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]],
                                        transformer_2=c["transformer_2"], **opts)


def tiny_wan22_5b_components(seed: int = 0) -> Dict[str, object]:
    """TI2V-5B layout: a 48-channel VAE with 16x spatial compression (2x2 patchified, residual), as in
    diffusers' tests/pipelines/wan/test_wan_22.py."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    transformer = _tiny_wan_transformer(48)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                           latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           scale_factor_spatial=16, scale_factor_temporal=4,
                           temperal_downsample=[False, True, True]).eval()
    return dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
                text_encoder=tiny_t5(32, umt5=True, seed=seed + 2), tokenizer=tiny_tokenizer(TEXT_LEN, bos=False))


def tiny_wan22_5b(seed: int = 0, **options):
    from vipo.generators.wan import WanGenerator

    c = tiny_wan22_5b_components(seed)
    opts = dict(height=64, width=64, num_frames=9, max_sequence_length=TEXT_LEN, lora_rank=4, guidance_scale=5.0,
                expand_timesteps=True)
    opts.update(options)
    return WanGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]], **opts)


# ----------------------------------------------------------------------------- folders
def save_components(folder: str, components: Dict[str, object]) -> str:
    """Write components into ``folder/<name>/`` like a diffusers pipeline checkpoint."""
    for name, comp in components.items():
        if hasattr(comp, "save_pretrained"):
            comp.save_pretrained(os.path.join(folder, name))
        else:
            comp.save_config(os.path.join(folder, name))  # schedulers
    return folder


@torch.no_grad()
def euler(gen, x: torch.Tensor, sigmas: torch.Tensor, cond) -> torch.Tensor:
    """Plain Euler ODE on the unpacked latents: x <- x + (s_{k+1} - s_k) v(x, s_k)."""
    for k in range(len(sigmas) - 1):
        s = sigmas[k].expand(x.shape[0])  # [B]
        x = x + (sigmas[k + 1] - sigmas[k]) * gen.velocity(x, s, cond)
    return x


def ours_against_pipeline(gen, pipe, x0: torch.Tensor, images: torch.Tensor, prompts, steps: int,
                          atol: float = 1e-4) -> torch.Tensor:
    """The shared half of a pipeline comparison: the pipeline's scheduler ran our schedule, and our Euler loop
    from the same noise, decoded, gives its images (float32, same shape, within ``atol``); returns ours."""
    sigmas = gen.sigmas(steps)
    assert torch.allclose(pipe.scheduler.sigmas.float(), sigmas, atol=1e-6)
    with torch.no_grad():
        ours = gen.decode(euler(gen, x0, sigmas, gen.encode_prompts(prompts)))
    assert ours.shape == images.shape and ours.dtype == torch.float32
    diff = (ours - images.float()).abs().max().item()
    assert diff < atol, diff
    return ours
