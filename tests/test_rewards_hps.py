"""HPSv2.1 on transformers: tokenizer, preprocessing, open_clip -> CLIPModel converter, score. No downloads."""

import gzip

import numpy as np
import pytest
import torch

from _scorer_refs import open_clip_encode_image, open_clip_encode_text, random_open_clip_state_dict
from vipo.rewards import REWARDS
from vipo.rewards.clip_utils import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIPBPETokenizer, byte_to_unicode,
                                     byte_vocabulary, resize_longest_and_pad, write_bpe_files)
from vipo.rewards.hps import HPSv21, clip_model_from_open_clip, convert_hps_checkpoint

MERGES = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"), ("th", "e</w>"), ("a", "n"),
          ("an", "d</w>")]
# vocab layout: 256 byte chars, 256 byte chars + '</w>', merges (ids 512..519), sot 520, eot 521
SOT, EOT, VOCAB = 520, 521, 522


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("clip_bpe"))
    write_bpe_files(d, MERGES)
    return d


@pytest.fixture(scope="module")
def tok(bpe_dir):
    return CLIPBPETokenizer.from_pretrained(bpe_dir, context_length=16)


# ------------------------------------------------------------------------------------ tokenizer
def test_byte_vocabulary_is_in_open_clip_order():
    """Printable bytes first (ids 0..187: '!'..'~', '¡'..'¬', '®'..'ÿ'), then the 68 others (byte 0 -> 'Ā')."""
    v = byte_vocabulary()
    assert v[:3] == ["!", '"', "#"] and v[64] == "a" and v[11] == "," and v[23] == "8" and v[93] == "~"
    assert v[187] == "ÿ" and v[188] == "Ā" and v[188 + 32] == "Ġ"  # byte 32 (space) is the 33rd non-printable
    assert sorted(byte_to_unicode()) == list(range(256)) and len(set(v)) == 256


def test_tokenizer_hand_computed_ids(tok):
    ids = tok(["The  CAT and the dog!"])[0].tolist()
    # 'the'->'the</w>' (517), 'cat'->'cat</w>' (513), 'and'->'and</w>' (519), 'dog</w>' (515), '!</w>' = 256 + 0
    expected = [SOT, 517, 513, 519, 517, 515, 256, EOT]
    assert ids == expected + [0] * (16 - len(expected))


def test_tokenizer_truncates_with_eot_last(tok):
    ids = tok(["x " * 40])[0].tolist()
    assert len(ids) == 16 and ids[0] == SOT and ids[-1] == EOT and 0 not in ids


def test_tokenizer_cleans_text_like_open_clip(tok):
    """open_clip unescapes HTML (twice) and collapses whitespace before BPE; transformers does not unescape."""
    assert torch.equal(tok(["a &amp;amp; b"]), tok(["a & b"]))
    assert torch.equal(tok(["  The\tCAT\n"]), tok(["the cat"]))
    assert tok(["<end_of_text>"])[0, :3].tolist() == [SOT, EOT, EOT]


def test_tokenizer_from_open_clip_gz_equals_vocab_json(tmp_path, tok):
    """Same ids through both loaders; against the reference's ids: tests/test_scorer_fixtures.py."""
    path = tmp_path / "bpe.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version header\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
    gz = CLIPBPETokenizer.from_bpe_gz(str(path), context_length=16, num_merges=len(MERGES))
    texts = ["The cat and the dog", "Café!"]
    assert torch.equal(gz(texts), tok(texts))
    assert gz(["a"])[0, 1] == 256 + 64  # 'a</w>'


# -------------------------------------------------------------------------------- preprocessing
def _norm(v, c):
    return (v - OPENAI_CLIP_MEAN[c]) / OPENAI_CLIP_STD[c]


def test_resize_longest_and_pad_no_resize_pads_rows():
    img = torch.rand(1, 3, 2, 4)  # H=2, W=4, size 4: scale 1, pad 1 row above and below
    out = resize_longest_and_pad(img, 4)
    assert out.shape == (1, 3, 4, 4)
    assert torch.equal(out[:, :, 1:3], img)
    assert torch.all(out[:, :, 0] == 0) and torch.all(out[:, :, 3] == 0)


@pytest.mark.parametrize("hw,new_w,left,right", [
    ((10, 3), 1, 1, 2),  # scale .4: width round(1.2) = 1, pad 3 = 1 left + 2 right
    ((8, 5), 2, 1, 1),  # width round(2.5) = 2: Python rounds halves to even
    ((8, 7), 4, 0, 0),  # width round(3.5) = 4
    ((8, 3), 2, 1, 1),  # width round(1.5) = 2
])
def test_resize_longest_and_pad_constant_image(hw, new_w, left, right):
    img = torch.full((1, 3, *hw), 0.6)
    out = resize_longest_and_pad(img, 4)
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(out[..., left:4 - right], torch.full((1, 3, 4, new_w), 0.6), atol=1e-6, rtol=0)
    assert torch.all(out[..., :left] == 0) and torch.all(out[..., 4 - right:] == 0)


def test_hps_preprocess_normalises_padding_as_black():
    model = clip_model_from_open_clip(random_open_clip_state_dict(), vision_head_width=16, text_head_width=16)
    scorer = HPSv21.from_model(model, tokenizer=None, quantize=False)
    px = scorer.preprocess(torch.full((1, 3, 32, 16), 0.5))  # -> 16 x 8, padded 4 + 4 columns
    for c in range(3):
        torch.testing.assert_close(px[0, c, :, 0], torch.full((16,), _norm(0.0, c)))
        torch.testing.assert_close(px[0, c, :, 8], torch.full((16,), _norm(0.5, c)))


def test_bicubic_antialias_matches_pil_float_resize():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 37, 23, generator=g)
    out = resize_longest_and_pad(img.expand(1, 3, 37, 23), 16)  # -> 16 x round(9.95)=10
    ref = np.array(Image.fromarray(img[0, 0].numpy(), mode="F").resize((10, 16), Image.BICUBIC))
    torch.testing.assert_close(out[0, 0, :, 3:13], torch.from_numpy(ref), atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------------ converter
def test_converter_reproduces_open_clip_forward():
    sd = random_open_clip_state_dict(seed=1)
    model = clip_model_from_open_clip(sd, vision_head_width=16, text_head_width=16)
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 16, 16, generator=g)
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[0, :5] = torch.tensor([SOT, 517, 513, 300, EOT])
    ids[1, :3] = torch.tensor([SOT, 45, EOT])
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    torch.testing.assert_close(img, open_clip_encode_image(sd, pixels, heads=2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt, open_clip_encode_text(sd, ids, heads=2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.logit_scale, sd["logit_scale"])


def test_converter_fails_loudly_on_missing_weights():
    sd = random_open_clip_state_dict()
    del sd["visual.ln_post.bias"]
    with pytest.raises(KeyError):
        clip_model_from_open_clip(sd, vision_head_width=16, text_head_width=16)


def test_converter_strips_module_prefix():
    sd = random_open_clip_state_dict()
    model = clip_model_from_open_clip({"module." + k: v for k, v in sd.items()}, 16, 16)
    torch.testing.assert_close(model.visual_projection.weight, sd["visual.proj"].T)


# ---------------------------------------------------------------------------------------- score
def test_hps_score_is_cosine_of_reference_embeddings(tok):
    sd = random_open_clip_state_dict(seed=3)
    scorer = HPSv21.from_model(clip_model_from_open_clip(sd, 16, 16), tok, quantize=False)
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 24, 20, generator=g)
    prompts = ["the cat", "a dog and the cat", "zebra"]
    scores = scorer(images, prompts)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    with torch.no_grad():
        img = open_clip_encode_image(sd, scorer.preprocess(images), heads=2)
        txt = open_clip_encode_text(sd, tok(prompts), heads=2)
    ref = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
    assert scores.abs().max() <= 1 + 1e-6


def test_hps_quantize_rounds_to_8_bits(tok):
    scorer = HPSv21.from_model(clip_model_from_open_clip(random_open_clip_state_dict(), 16, 16), tok)
    img = torch.full((1, 3, 16, 16), 0.5 / 255 + 0.1)  # 25.99 -> 26 / 255
    torch.testing.assert_close(scorer.preprocess(img)[0, 0, 5, 5], torch.tensor(_norm(26 / 255, 0)))


def test_hps_rejects_video_and_missing_checkpoint(tok, tmp_path):
    scorer = HPSv21.from_model(clip_model_from_open_clip(random_open_clip_state_dict(), 16, 16), tok)
    with pytest.raises(ValueError):
        scorer(torch.rand(1, 3, 2, 16, 16), ["x"])
    with pytest.raises(ValueError):
        scorer(torch.rand(1, 4, 16, 16), ["x"])
    missing = str(tmp_path / "nope" / "HPS_v2.1_compressed.pt")
    with pytest.raises(FileNotFoundError, match="nope"):
        REWARDS.build("hps", path_or_id=missing)


def test_hps_end_to_end_from_official_layout_file(tmp_path, bpe_dir):
    """A file shaped like HPS_v2.1_compressed.pt ({'state_dict': open_clip keys}, ViT-H-14 head widths
    80 / 64, 77 text positions) loads through the public constructor and scores like the reference."""
    sd = random_open_clip_state_dict(seed=5, v_width=160, t_width=128, ctx=77)
    torch.save({"state_dict": {k: v.half() for k, v in sd.items()}, "epoch": 1}, tmp_path / "HPS_v2.1_compressed.pt")
    scorer = REWARDS.build("hps", path_or_id=str(tmp_path), tokenizer_path_or_id=bpe_dir, quantize=False)
    assert scorer.model.config.vision_config.num_attention_heads == 2
    images, prompts = torch.rand(2, 3, 16, 16), ["the cat", "the dog"]
    sd32 = {k: v.half().float() for k, v in sd.items()}
    with torch.no_grad():
        img = open_clip_encode_image(sd32, scorer.preprocess(images), heads=2)
        txt = open_clip_encode_text(sd32, scorer.tokenizer(prompts), heads=2)
    ref = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    torch.testing.assert_close(scorer(images, prompts), ref, atol=1e-5, rtol=1e-5)
    # converted once and saved as a transformers folder, it loads back to the same scores
    folder = convert_hps_checkpoint(str(tmp_path), str(tmp_path / "hf"))
    again = HPSv21(folder, tokenizer_path_or_id=bpe_dir, quantize=False)
    torch.testing.assert_close(again(images, prompts), ref, atol=1e-5, rtol=1e-5)


def test_hps_is_differentiable_without_quantisation(tok):
    scorer = HPSv21.from_model(clip_model_from_open_clip(random_open_clip_state_dict(), 16, 16), tok,
                               quantize=False)
    images = torch.rand(2, 3, 20, 16, requires_grad=True)
    scorer(images, ["the cat", "the dog"]).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_differentiable_path_drops_the_rounding_only_inside_the_context(tok):
    """quantize=true (the reference) scores with zero input gradient; inside differentiable_path the scores are the
    unrounded ones, with a gradient; after it (also after an error) the reference path is back."""
    scorer = HPSv21.from_model(clip_model_from_open_clip(random_open_clip_state_dict(), 16, 16), tok)
    plain = HPSv21.from_model(scorer.model, tok, quantize=False)
    images, prompts = torch.rand(2, 3, 20, 16), ["the cat", "the dog"]
    x = images.clone().requires_grad_(True)
    with scorer.differentiable_path():
        scorer(x, prompts).sum().backward()
        torch.testing.assert_close(scorer(images, prompts), plain(images, prompts), atol=0, rtol=0)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert scorer.quantize is True
    rounded = (images * 255).round() / 255
    torch.testing.assert_close(scorer(images, prompts), plain(rounded, prompts), atol=0, rtol=0)
    y = images.clone().requires_grad_(True)
    scorer(y, prompts).sum().backward()
    assert y.grad is None or y.grad.abs().sum() == 0  # the reference path: the rounding's gradient is zero
    with pytest.raises(RuntimeError, match="inside"):
        with scorer.differentiable_path():
            raise RuntimeError("inside")
    assert scorer.quantize is True
