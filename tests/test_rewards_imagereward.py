"""ImageReward on transformers' BLIP classes: converter, tokenizer, preprocessing, score. No downloads."""

import pytest
import torch

from _scorer_refs import imagereward_forward, random_imagereward_state_dict
from vipo.rewards import REWARDS
from vipo.rewards.clip_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from vipo.rewards.imagereward import (ImageRewardModel, blip_tokenizer, imagereward_modules_from_state_dict)

WORDS = ["a", "cat", "the", "##s", "dog", "on", "mat", "red", "blue", "sits"]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert_vocab")
    filler = [f"[unused{i}]" for i in range(38 - 5 - len(WORDS))]
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *filler]) + "\n")
    return str(d)  # 38 WordPiece ids; [DEC] -> 38, [ENC] -> 39 (like 30522 + 2 = 30524)


@pytest.fixture(scope="module")
def tok(vocab_dir):
    return blip_tokenizer(vocab_dir)


def _scorer(sd, tok, **kw):
    vision, text, head = imagereward_modules_from_state_dict(sd, head_dim=16)
    return ImageRewardModel.from_model(vision, text, head, tok, **kw)


def test_tokenizer_special_tokens_and_length(tok):
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [38, 39] and len(tok) == 40
    assert tok.bos_token_id == 38
    ids = tok(["the cats sits on a red mat"], padding="max_length", truncation=True, max_length=35)["input_ids"][0]
    assert ids[:10] == [2, 7, 6, 8, 14, 10, 5, 12, 11, 3] and ids[10:] == [0] * 25  # [CLS] the cat ##s ... [SEP]
    long = tok(["cat " * 50], padding="max_length", truncation=True, max_length=35)["input_ids"][0]
    assert len(long) == 35 and long[0] == 2 and long[-1] == 3


def test_modules_reproduce_blip_forward():
    sd = random_imagereward_state_dict(seed=1)
    vision, text, head = imagereward_modules_from_state_dict(sd, head_dim=16)
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 16, 16, generator=g)
    ids = torch.tensor([[2, 7, 6, 3, 0, 0], [2, 9, 10, 11, 12, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        emb = vision(pixel_values=pixels).last_hidden_state
        out = text(input_ids=ids, attention_mask=mask, encoder_hidden_states=emb,
                   encoder_attention_mask=torch.ones(emb.shape[:2], dtype=torch.long)).last_hidden_state
        raw = head(out[:, 0])[:, 0]
    ref_raw, _ = imagereward_forward(sd, pixels, ids, mask, v_heads=2, t_heads=2)
    torch.testing.assert_close(raw, ref_raw, atol=1e-5, rtol=1e-5)


def test_score_matches_reference_and_standardisation(tok):
    sd = random_imagereward_state_dict(seed=3)
    scorer = _scorer(sd, tok)
    images = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(4))
    prompts = ["the red cat sits on a mat", "dog"]
    scores = scorer(images, prompts)
    assert scores.shape == (2,) and scores.dtype == torch.float32
    t = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    raw, ref = imagereward_forward(sd, scorer.preprocess(images), t["input_ids"], t["attention_mask"], 2, 2)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, (raw - 0.16717362830052426) / 1.0333394966054072, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width,left", [(24, 4), (21, 2), (23, 4)])  # left = round((W - 16) / 2), halves to even
def test_reference_preprocessing_hand_computed(tok, width, left):
    scorer = _scorer(random_imagereward_state_dict(), tok)
    img = torch.rand(1, 3, 16, width, generator=torch.Generator().manual_seed(5))
    q = (img * 255).round() / 255
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(scorer.preprocess(img), ((q - mean) / std)[..., left:left + 16], atol=1e-6, rtol=0)


def test_reference_preprocessing_resizes_shortest_side_with_pil(tok):
    from PIL import Image
    import numpy as np

    scorer = _scorer(random_imagereward_state_dict(), tok)
    img = torch.rand(1, 3, 40, 30, generator=torch.Generator().manual_seed(6))  # -> 21 x 16 (int(16*40/30)), top 2
    arr = (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    ref = np.asarray(Image.fromarray(arr).resize((16, 21), Image.BICUBIC), dtype=np.float32)[2:18] / 255
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(scorer.preprocess(img)[0], (torch.from_numpy(ref).permute(2, 0, 1) - mean) / std)


def test_torch_preprocessing_close_to_reference(tok):
    sd = random_imagereward_state_dict()
    ref, diff = _scorer(sd, tok), _scorer(sd, tok, preprocess="torch")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 30), indexing="ij")
    img = torch.stack([yy, xx, (yy + xx) / 2])[None]
    assert (ref.preprocess(img) - diff.preprocess(img)).abs().max() < 0.03


def test_end_to_end_from_checkpoint_file(tmp_path, vocab_dir, tok):
    """A flat ImageReward.pt state dict (64-dim heads, as BLIP-L / BERT-base) through the registry."""
    sd = random_imagereward_state_dict(seed=7, v_width=128, t_width=128)
    torch.save(sd, tmp_path / "ImageReward.pt")
    scorer = REWARDS.build("imagereward", path_or_id=str(tmp_path), tokenizer_path_or_id=vocab_dir)
    assert scorer.vision.config.num_attention_heads == 2 and scorer.text.config.num_attention_heads == 2
    images, prompts = torch.rand(2, 3, 16, 16), ["a blue dog", "the cat"]
    t = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    _, ref = imagereward_forward(sd, scorer.preprocess(images), t["input_ids"], t["attention_mask"], 2, 2)
    torch.testing.assert_close(scorer(images, prompts), ref, atol=1e-4, rtol=1e-4)


def test_errors(tok, tmp_path):
    sd = random_imagereward_state_dict()
    del sd["blip.text_encoder.encoder.layer.1.crossattention.self.key.bias"]
    with pytest.raises(KeyError, match="crossattention"):
        imagereward_modules_from_state_dict(sd, head_dim=16)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        ImageRewardModel(path_or_id=str(tmp_path / "missing_dir"))
    scorer = _scorer(random_imagereward_state_dict(), tok)
    with pytest.raises(ValueError):
        scorer(torch.rand(1, 3, 2, 16, 16), ["x"])


def test_differentiable_path_is_the_torch_preprocessing_inside_the_context(tok):
    sd = random_imagereward_state_dict()
    ref, diff = _scorer(sd, tok), _scorer(sd, tok, preprocess="torch")
    images, prompts = torch.rand(2, 3, 40, 30), ["a cat", "a dog"]
    with ref.differentiable_path():
        x = images.clone().requires_grad_(True)
        ref(x, prompts).sum().backward()
        torch.testing.assert_close(ref(images, prompts), diff(images, prompts), atol=0, rtol=0)
    assert x.grad.abs().sum() > 0 and ref.preprocess_mode == "reference"
