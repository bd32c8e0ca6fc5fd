"""PickScore on a tiny random CLIPModel with a tiny BPE vocabulary. No downloads."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from vipo.rewards import REWARDS
from vipo.rewards.clip_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, write_bpe_files
from vipo.rewards.pickscore import PickScore

MERGES = [("c", "a"), ("ca", "t</w>"), ("t", "h"), ("th", "e</w>")]  # vocab 512 + 4 + sot 516 + eot 517


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pick_tok"))
    write_bpe_files(d, MERGES)
    tok = CLIPTokenizer.from_pretrained(d)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=518, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=516, eos_token_id=517,
                         pad_token_id=517),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=16, patch_size=4),
        projection_dim=24, logit_scale_init_value=2.0)
    torch.manual_seed(0)
    return CLIPModel(cfg).eval(), tok, d


def test_score_equals_clip_logits_per_image(parts):
    model, tok, _ = parts
    scorer = PickScore.from_model(model, tok)
    images = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    prompts = ["the cat", "a cat on the mat with the cat", "cat"]
    scores = scorer(images, prompts)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    text = tok(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():  # transformers' own CLIP forward: logit_scale.exp() * cos, one row per image
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    pixel_values=scorer.preprocess(images))
    torch.testing.assert_close(scores, out.logits_per_image.diagonal(), atol=1e-5, rtol=1e-5)
    assert scores.abs().max() <= torch.tensor(2.0).exp() + 1e-4  # |cos| <= 1


def test_scores_do_not_depend_on_batch_padding(parts):
    model, tok, _ = parts
    scorer = PickScore.from_model(model, tok)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    prompts = ["cat", "the cat and the cat and the cat"]
    together = scorer(images, prompts)
    alone = torch.cat([scorer(images[i:i + 1], prompts[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_reference_preprocessing_hand_computed(parts):
    """16 x 24 image, size 16: no resize, centre crop keeps columns 4..19, pixels on the 8-bit grid."""
    model, tok, _ = parts
    scorer = PickScore.from_model(model, tok)
    img = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(3))
    px = scorer.preprocess(img)
    q = (img * 255).round() / 255
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(px, ((q - mean) / std)[..., 4:20], atol=1e-6, rtol=0)


def test_torch_preprocessing_close_to_reference(parts):
    model, tok, _ = parts
    ref = PickScore.from_model(model, tok)
    diff = PickScore.from_model(model, tok, preprocess="torch")
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 56), indexing="ij")
    img = torch.stack([yy, xx, (yy + xx) / 2])[None]  # smooth [1, 3, 40, 56]
    err = (ref.preprocess(img) - diff.preprocess(img)).abs().max()
    assert err < 0.03  # 8-bit PIL arithmetic vs float; ~1/255 in pixel units after /std


def test_constructor_loads_saved_folders(parts, tmp_path):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model, tok, tok_dir = parts
    model.save_pretrained(tmp_path / "model")
    proc = tmp_path / "processor"
    tok.save_pretrained(proc)
    CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(proc)
    loaded = REWARDS.build("pickscore", path_or_id=str(tmp_path / "model"), processor_path_or_id=str(proc))
    images, prompts = torch.rand(2, 3, 20, 16), ["the cat", "cat"]
    torch.testing.assert_close(loaded(images, prompts), PickScore.from_model(model, tok)(images, prompts))


def test_errors(parts, tmp_path):
    model, tok, _ = parts
    scorer = PickScore.from_model(model, tok)
    with pytest.raises(ValueError):
        scorer(torch.rand(1, 3, 2, 16, 16), ["x"])
    with pytest.raises(ValueError):
        PickScore.from_model(model, tok, preprocess="bilinear")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        PickScore(path_or_id=str(tmp_path / "no_such_dir"))


def test_differentiable_path_is_the_torch_preprocessing_inside_the_context(parts):
    model, tok, _ = parts
    ref = PickScore.from_model(model, tok)
    diff = PickScore.from_model(model, tok, preprocess="torch")
    images, prompts = torch.rand(2, 3, 40, 56), ["a cat", "a dog"]
    with ref.differentiable_path():
        x = images.clone().requires_grad_(True)
        ref(x, prompts).sum().backward()
        torch.testing.assert_close(ref(images, prompts), diff(images, prompts), atol=0, rtol=0)
    assert x.grad.abs().sum() > 0 and ref.preprocess_mode == "reference"
