"""Tiny randomly initialised Qwen-Image / FLUX.2 / Z-Image generators for tests (no downloads).

Configs follow diffusers' own pipeline tests (tests/pipelines/qwenimage, flux2, z_image); tokenizers are
in-process word-level ones over the vocabulary of ``tiny_models``.

    tiny_qwen_image(), tiny_flux2(), tiny_z_image()   ready Generators (LoRA rank 4 unless overridden)
    tiny_*_components()                             the raw components (dict) for pipelines / from_components
    hot_region_on_tokens(gen)                       checks that a hot map region packs onto the right tokens
"""

from __future__ import annotations

from typing import Dict

import torch

from tiny_models import SPECIALS, WORDS

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
QWEN_TEXT_LEN = 16  # text tokens after the template


def chat_tokenizer(model_max_length: int = 2048):
    """Word-level tokenizer for chat templates: words, punctuation and newlines are tokens (so Qwen-Image's
    template system part is 34 tokens, as with the real Qwen2 tokenizer), the chat markers are special
    tokens, and nothing is added around the text."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS + ["\n", ",", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+|\n"), behavior="removed", invert=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=model_max_length)
    fast.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    return fast


CHAT_VOCAB = len(SPECIALS) + len(WORDS) + 3 + len(CHAT_TOKENS)


def hot_region_on_tokens(gen):
    """Maps hot on latent rows 4..7, cols 6..9 of a 16x16 grid, packed by ``gen.pack_map``: the hot values must
    fill exactly token rows 2..3, cols 3..4 of the 8x8 token grid, all four 2x2 slots. Returns (maps, packed)."""
    assert gen.map_grid() == (16, 16)
    maps = torch.zeros(2, 16, 16)
    maps[:, 4:8, 6:10] = 1.0
    packed = gen.pack_map(maps)  # [2, 64, 4]
    assert packed.shape == (2, 64, 4)
    hot = sorted(torch.nonzero(packed[0].sum(-1)).flatten().tolist())
    assert hot == [2 * 8 + 3, 2 * 8 + 4, 3 * 8 + 3, 3 * 8 + 4] and torch.all(packed[:, hot] == 1.0)
    assert packed.sum() == maps.sum()  # nothing else is hot
    return maps, packed


# ----------------------------------------------------------------------------- Qwen-Image
def tiny_qwen_image_components(seed: int = 0) -> Dict[str, object]:
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vipo.generators.qwen_image import SCHEDULER_CONFIG

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=[0.1 * i - 0.8 for i in range(16)],
                                 latents_std=[1.0 + 0.2 * i for i in range(16)]).eval()
    torch.manual_seed(seed + 2)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": CHAT_VOCAB, "rope_theta": 1000000.0,
                     "bos_token_id": None, "eos_token_id": None, "pad_token_id": 0,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=CHAT_VOCAB, bos_token_id=None, eos_token_id=None, vision_end_token_id=151653,
        vision_start_token_id=151652, vision_token_id=151654)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    return dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
                text_encoder=text_encoder, tokenizer=chat_tokenizer())


def tiny_qwen_image(seed: int = 0, **options):
    from vipo.generators.qwen_image import QwenImageGenerator

    c = tiny_qwen_image_components(seed)
    opts = dict(height=128, width=128, max_sequence_length=QWEN_TEXT_LEN, lora_rank=4, guidance_scale=4.0)
    opts.update(options)
    return QwenImageGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]],
                                              **opts)


# ----------------------------------------------------------------------------- FLUX.2
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% for c in m['content'] %}"
                 "{{ c['text'] }}{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}")
FLUX2_TEXT_LEN = 48  # chat-template tokens: the system message is truncated inside this window
FLUX2_LAYERS = (1, 2)  # text-encoder hidden states stacked into the prompt embedding


def tiny_flux2_components(seed: int = 0) -> Dict[str, object]:
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    from vipo.generators.flux2 import SCHEDULER_CONFIG

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                          timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4])
    torch.manual_seed(seed + 1)
    text = {"model_type": "mistral", "vocab_size": CHAT_VOCAB, "hidden_size": 16, "intermediate_size": 37,
            "max_position_embeddings": 512, "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "rope_theta": 1000000000.0, "sliding_window": None,
            "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    vision = {"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 37, "image_size": 30, "patch_size": 6, "num_channels": 3}
    config = Mistral3Config(text_config=text, vision_config=vision, bos_token_id=2, eos_token_id=3, pad_token_id=0,
                            image_seq_length=4, vision_feature_layer=-1, image_token_index=1)
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLFlux2(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                             up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                             layers_per_block=1, latent_channels=4, norm_num_groups=4, use_quant_conv=False,
                             use_post_quant_conv=False).eval()
    vae.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, 16))  # non-trivial statistics, so decode must apply them
    vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, 16))
    tokenizer = chat_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
                text_encoder=text_encoder, tokenizer=tokenizer)


def tiny_flux2(seed: int = 0, **options):
    from vipo.generators.flux2 import Flux2Generator

    c = tiny_flux2_components(seed)
    opts = dict(height=128, width=128, max_sequence_length=FLUX2_TEXT_LEN, text_encoder_layers=FLUX2_LAYERS,
                lora_rank=4)
    opts.update(options)
    return Flux2Generator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]], **opts)


# ----------------------------------------------------------------------------- Z-Image
ZIMAGE_CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
ZIMAGE_TEXT_LEN = 24  # chat-template tokens (padded)


def tiny_z_image_components(seed: int = 0) -> Dict[str, object]:
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from tiny_models import tiny_vae2d
    from vipo.generators.z_image import SCHEDULER_CONFIG

    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                           n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                           qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                           axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    with torch.no_grad():  # created with torch.empty; fix them as diffusers' tests do
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    torch.manual_seed(seed + 1)
    config = Qwen3Config(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=CHAT_VOCAB, max_position_embeddings=512, pad_token_id=0)
    text_encoder = Qwen3Model(config).eval()
    tokenizer = chat_tokenizer()
    tokenizer.chat_template = ZIMAGE_CHAT_TEMPLATE
    return dict(transformer=transformer, vae=tiny_vae2d(seed=seed + 2),
                scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), text_encoder=text_encoder,
                tokenizer=tokenizer)


def tiny_z_image(seed: int = 0, **options):
    from vipo.generators.z_image import ZImageGenerator

    c = tiny_z_image_components(seed)
    opts = dict(height=128, width=128, max_sequence_length=ZIMAGE_TEXT_LEN, lora_rank=4, guidance_scale=3.0)
    opts.update(options)
    return ZImageGenerator.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]], **opts)
