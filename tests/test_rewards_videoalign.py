"""VideoAlign on a tiny random Qwen2-VL: preprocessing by hand, pooling, normalisation, LoRA loading.

No downloads. The prompt template used here is made up (any text with the three reward tokens).
"""

import json

import numpy as np
import pytest
import torch
from transformers import Qwen2VLConfig
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

from vipo.rewards import REWARDS
from vipo.rewards.clip_utils import byte_to_unicode
from vipo.rewards.videoalign import REWARD_TOKENS, VideoAlign, VideoRewardModel, load_reward_state
from vipo.rewards.videoalign_processing import (frame_indices, num_sampled_frames, patchify, read_reference_templates,
                                                resize_frames_uint8, smart_resize)

TEMPLATE = "Judge {text_prompt}: <|VQ_reward|> then <|MQ_reward|> then <|TA_reward|>."
DATA = dict(fps=2.0, max_frame_pixels=8 * 12, prompt_template_type="detailed_special", eval_dim=["VQ", "MQ", "TA"])
NORM = {"VQ_mean": 1.0, "VQ_std": 2.0, "MQ_mean": -0.5, "MQ_std": 4.0, "TA_mean": 0.25, "TA_std": 0.5}


@pytest.fixture(scope="module")
def tok():
    vocab = {c: i for i, c in enumerate(byte_to_unicode().values())}
    vocab["<|endoftext|>"] = 256
    t = Qwen2Tokenizer(vocab=vocab, merges=[])
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                        "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]})
    t.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
    return t


@pytest.fixture(scope="module")
def config(tok):
    ids = tok.convert_tokens_to_ids
    return Qwen2VLConfig(
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=None, eos_token_id=None),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=2, temporal_patch_size=2,
                           spatial_merge_size=2, mlp_ratio=2),
        video_token_id=ids("<|video_pad|>"), image_token_id=ids("<|image_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"))


def _build(config, tok, seed=0):
    torch.manual_seed(seed)
    hf = Qwen2VLModel(config).eval()
    model = VideoRewardModel(hf.visual, hf.language_model, 32, config.video_token_id, 3,
                             tok.convert_tokens_to_ids(list(REWARD_TOKENS)), tok.pad_token_id)
    return hf, model


def _videos(seed=1, b=2, f=17):
    return torch.rand(b, 3, f, 16, 24, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------- preprocessing
def test_smart_resize_hand_computed():
    assert smart_resize(480, 832, max_pixels=240 * 320) == (196, 364)  # sqrt(480*832/76800) = 2.28 -> floor
    assert smart_resize(240, 320, max_pixels=240 * 320) == (224, 308)  # 252 x 320 > max: beta = 1, floor
    assert smart_resize(56, 56, max_pixels=10 ** 7) == (336, 336)  # below 128*28*28: grown by sqrt(32), ceil
    with pytest.raises(ValueError):
        smart_resize(10, 3000)


def test_frame_sampling_hand_computed():
    assert num_sampled_frames(81, video_fps=16, fps=2.0) == 10  # 81/16*2 = 10.1 -> 10
    assert num_sampled_frames(17, video_fps=16, fps=2.0) == 4  # raised to the 4-frame minimum
    assert num_sampled_frames(3, video_fps=16, fps=2.0) == 2  # capped at the even count <= total
    assert num_sampled_frames(81, video_fps=16, nframes=7) == 8  # round(3.5) * 2, halves to even
    assert frame_indices(81, 10).tolist() == [0, 9, 18, 27, 36, 44, 53, 62, 71, 80]


def test_resize_frames_stays_on_the_8_bit_grid():
    frames = torch.rand(3, 3, 20, 30)
    out = resize_frames_uint8(frames, (8, 12))
    assert out.shape == (3, 3, 8, 12) and torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    torch.testing.assert_close(resize_frames_uint8(torch.full((1, 3, 20, 30), 0.4), (8, 12)),
                               torch.full((1, 3, 8, 12), 102.0))  # 0.4 * 255 = 102


def test_patchify_against_explicit_loops():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, 3, 8, 12, generator=g)  # odd T: last frame repeated
    flat, (t, h, w) = patchify(frames, patch_size=2, temporal_patch_size=2, merge_size=2)
    assert (t, h, w) == (2, 4, 6) and flat.shape == (48, 24)
    padded = torch.cat([frames, frames[-1:]])
    rows = []
    for ti in range(t):
        for bh in range(h // 2):
            for bw in range(w // 2):
                for mh in range(2):
                    for mw in range(2):
                        y, x = (bh * 2 + mh) * 2, (bw * 2 + mw) * 2
                        patch = padded[2 * ti:2 * ti + 2, :, y:y + 2, x:x + 2]  # [tp, C, p, p]
                        rows.append(patch.permute(1, 0, 2, 3).reshape(-1))  # (C, tp, p, p)
    torch.testing.assert_close(flat, torch.stack(rows))


def test_patchify_matches_transformers_qwen2_vl_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    img = torch.randn(3, 56, 84, generator=torch.Generator().manual_seed(3))
    ref, gh, gw = Qwen2VLImageProcessorPil().patchify(img.numpy(), patch_size=14, merge_size=2, temporal_patch_size=2)
    ours, grid = patchify(img[None].expand(2, -1, -1, -1))  # an image = two identical frames
    assert grid == (1, gh, gw)
    np.testing.assert_allclose(ours.numpy(), ref, atol=0, rtol=0)


def test_reference_template_file_is_read_without_import(tmp_path):
    path = tmp_path / "prompt_template.py"
    path.write_text("import os\nDETAILED_PROMPT_WITH_SPECIAL_TOKEN = '''X {text_prompt} <|VQ_reward|>'''\n"
                    "DIMENSION_DESCRIPTIONS = {'VQ': ['visual quality', 'clearness']}\nos.remove('/nonexistent')\n")
    consts = read_reference_templates(str(path))
    assert consts["DETAILED_PROMPT_WITH_SPECIAL_TOKEN"] == "X {text_prompt} <|VQ_reward|>"
    assert consts["DIMENSION_DESCRIPTIONS"] == {"VQ": ["visual quality", "clearness"]}


# ------------------------------------------------------------------------------------- the model
def test_heads_read_at_reward_tokens_with_sequential_positions(config, tok):
    hf, model = _build(config, tok)
    scorer = VideoAlign.from_model(model, tok, data_config=DATA, prompt_template=TEMPLATE, use_norm=False)
    batch = scorer.prepare(_videos(), ["a cat", "a much longer prompt about a dog"])
    B, L = batch["input_ids"].shape
    seq = torch.arange(L).view(1, 1, L).expand(3, B, L)
    with torch.no_grad():
        ours = model(**batch)
        hidden = hf(**batch, position_ids=seq).last_hidden_state  # transformers' own Qwen2-VL forward
        types = (batch["input_ids"] == config.video_token_id).int() * 2  # text 0, video 2
        mrope = hf(**batch, mm_token_type_ids=types).last_hidden_state  # transformers' 3-D M-RoPE positions
    ids = tok.convert_tokens_to_ids(list(REWARD_TOKENS))
    expected = torch.stack([
        torch.stack([hidden[b, (batch["input_ids"][b] == ids[k]).nonzero()[0, 0]] @ model.rm_head.weight[k]
                     for k in range(3)]) for b in range(B)])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hidden, mrope, atol=1e-3)  # the position choice matters, so the test can fail


def test_batch_padding_does_not_change_rewards(config, tok):
    _, model = _build(config, tok)
    scorer = VideoAlign.from_model(model, tok, data_config=DATA, prompt_template=TEMPLATE)
    videos, prompts = _videos(2), ["a cat", "a much longer prompt about a dog sitting"]
    with torch.no_grad():
        together = scorer.rewards(videos, prompts)["Overall"]
        alone = torch.cat([scorer.rewards(videos[i:i + 1], prompts[i:i + 1])["Overall"] for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_normalisation_overall_and_outputs(config, tok):
    _, model = _build(config, tok)
    raw = VideoAlign.from_model(model, tok, data_config=DATA, prompt_template=TEMPLATE, use_norm=False)
    videos, prompts = _videos(3), ["x", "y"]
    with torch.no_grad():
        r = raw.rewards(videos, prompts)
        normed = VideoAlign.from_model(model, tok, data_config=DATA, inference_config=NORM, prompt_template=TEMPLATE)
        n = normed.rewards(videos, prompts)
        mq = VideoAlign.from_model(model, tok, data_config=DATA, inference_config=NORM, prompt_template=TEMPLATE,
                                   output="MQ")(videos, prompts)
        mix = VideoAlign.from_model(model, tok, data_config=DATA, inference_config=NORM, prompt_template=TEMPLATE,
                                    output={"VQ": 1.0, "MQ": 0.5})(videos, prompts)
    torch.testing.assert_close(n["VQ"], (r["VQ"] - 1.0) / 2.0)
    torch.testing.assert_close(n["MQ"], (r["MQ"] + 0.5) / 4.0)
    torch.testing.assert_close(n["TA"], (r["TA"] - 0.25) / 0.5)
    torch.testing.assert_close(n["Overall"], n["VQ"] + n["MQ"] + n["TA"])
    torch.testing.assert_close(mq, n["MQ"])
    torch.testing.assert_close(mix, n["VQ"] + 0.5 * n["MQ"])


def _reference_lora_state(model, r=4, seed=5):
    """Adapter + non-LoRA weights named as the reference saves them (peft prefix, no adapter name)."""
    g = torch.Generator().manual_seed(seed)
    q = model.model.layers[0].self_attn.q_proj
    emb = model.model.embed_tokens
    pre = "base_model.model."
    return {
        pre + "model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(r, q.in_features, generator=g) * 0.3,
        pre + "model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(q.out_features, r, generator=g) * 0.3,
        pre + "model.embed_tokens.lora_embedding_A": torch.randn(r, emb.num_embeddings, generator=g) * 0.3,
        pre + "model.embed_tokens.lora_embedding_B": torch.randn(emb.embedding_dim, r, generator=g) * 0.3,
        pre + "lm_head.lora_A.weight": torch.randn(r, 32, generator=g),  # ignored: no LM head
        pre + "rm_head.weight": torch.randn(3, 32, generator=g),
    }


def _merge_by_hand(model, state, alpha=8, r=4):
    """LoRA merged by hand into ``model``: W + alpha/r * B A (embedding: + alpha/r * (B A)^T)."""
    s = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    with torch.no_grad():
        q = model.model.layers[0].self_attn.q_proj
        q.weight += alpha / r * s["model.layers.0.self_attn.q_proj.lora_B.weight"] @ s[
            "model.layers.0.self_attn.q_proj.lora_A.weight"]
        model.model.embed_tokens.weight += alpha / r * (s["model.embed_tokens.lora_embedding_B"]
                                                        @ s["model.embed_tokens.lora_embedding_A"]).T
        model.rm_head.weight.copy_(s["rm_head.weight"])
    return model


def test_lora_checkpoint_loads_through_peft_like_a_hand_merge(config, tok):
    _, model = _build(config, tok)
    state = _reference_lora_state(model)
    load_reward_state(model, state, lora_r=4, lora_alpha=8)
    merged = _merge_by_hand(_build(config, tok)[1], state)
    a = VideoAlign.from_model(model, tok, data_config=DATA, prompt_template=TEMPLATE)
    b = VideoAlign.from_model(merged, tok, data_config=DATA, prompt_template=TEMPLATE)
    videos, prompts = _videos(4), ["a cat", "a dog"]
    with torch.no_grad():
        torch.testing.assert_close(a(videos, prompts), b(videos, prompts), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a(videos, prompts), VideoAlign.from_model(
            _build(config, tok)[1], tok, data_config=DATA, prompt_template=TEMPLATE)(videos, prompts))
    with pytest.raises(KeyError):
        load_reward_state(_build(config, tok)[1], {"base_model.model.model.not_a_layer.weight": torch.zeros(1)})


def test_end_to_end_from_reference_folder_layout(config, tok, tmp_path):
    """model_config.json + checkpoint-<step>/ (adapter + non-LoRA weights) + a base Qwen2-VL folder whose
    tokenizer lacks the reward tokens and whose vocabulary is padded (300 rows -> resized to 266)."""
    from safetensors.torch import save_file
    from transformers import Qwen2VLForConditionalGeneration

    base = tmp_path / "base"
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(base)
    plain = Qwen2Tokenizer(vocab={c: i for i, c in enumerate([*byte_to_unicode().values(), "<|endoftext|>"])},
                           merges=[])
    plain.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                            "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"]})
    plain.save_pretrained(base)
    run = tmp_path / "VideoReward"
    (run / "checkpoint-10").mkdir(parents=True)  # older step: must be skipped
    (run / "checkpoint-20").mkdir()
    (tmp_path / "prompt_template.py").write_text(f"DETAILED_PROMPT_WITH_SPECIAL_TOKEN = {TEMPLATE!r}\n")
    (run / "model_config.json").write_text(json.dumps({
        "data_config": DATA, "inference_config": NORM,
        "model_config": {"model_name_or_path": str(base), "output_dim": 3, "use_special_tokens": True,
                         "reward_token": "special"},
        "peft_lora_config": {"lora_enable": True, "lora_r": 4, "lora_alpha": 8, "use_rslora": False}}))

    hf = Qwen2VLForConditionalGeneration.from_pretrained(base)
    expected_model = VideoRewardModel(hf.model.visual, hf.model.language_model, 32, config.video_token_id, 3,
                                      tok.convert_tokens_to_ids(list(REWARD_TOKENS)), tok.pad_token_id)
    expected_model.resize_token_embeddings(len(tok))
    state = _reference_lora_state(expected_model)
    adapter = {k: v for k, v in state.items() if "lora_" in k}
    save_file(adapter, str(run / "checkpoint-20" / "adapter_model.safetensors"))
    torch.save({k: v for k, v in state.items() if "lora_" not in k}, run / "checkpoint-20" / "non_lora_state_dict.pth")
    _merge_by_hand(expected_model, state)

    scorer = REWARDS.build("videoalign", path_or_id=str(run), prompt_template=str(tmp_path / "prompt_template.py"),
                           dtype=torch.float32, video_fps=16.0)
    assert scorer.model.model.embed_tokens.weight.shape[0] == len(tok) == 266
    expected = VideoAlign.from_model(expected_model, tok, data_config=DATA, inference_config=NORM,
                                     prompt_template=TEMPLATE)
    videos, prompts = _videos(6), ["a cat", "a dog"]
    with torch.no_grad():
        torch.testing.assert_close(scorer(videos, prompts), expected(videos, prompts), atol=1e-5, rtol=1e-5)


def test_errors(config, tok, tmp_path):
    _, model = _build(config, tok)
    scorer = VideoAlign.from_model(model, tok, data_config=DATA, prompt_template=TEMPLATE)
    with pytest.raises(ValueError, match="videos"):
        scorer(torch.rand(2, 3, 16, 24), ["a", "b"])
    with pytest.raises(ValueError, match="prompt_template"):
        VideoAlign.from_model(model, tok, data_config=DATA)
    with pytest.raises(ValueError, match="reward tokens"):
        VideoAlign.from_model(model, tok, data_config=DATA, prompt_template="no tokens {text_prompt}")(
            _videos(), ["a", "b"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoAlign(path_or_id=str(tmp_path / "nowhere"))
