"""Our HPSv2.1, PickScore and ImageReward ports against outputs of the reference packages themselves.

The numbers in tests/fixtures/scorers/ were written by checks/make_scorer_fixtures.py running hpsv2, image-reward
and transformers' PickScore code path in the reference environment (torchvision, .venv-ref); see the fixture
README. Inputs and weights are rebuilt here from tests/_scorer_fixture_spec.py and the stored seeds.
"""

import json
import os

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

import _scorer_fixture_spec as spec
from _scorer_refs import random_imagereward_state_dict, random_open_clip_state_dict
from vipo.rewards.clip_utils import CLIPBPETokenizer, write_bpe_files
from vipo.rewards.hps import HPSv21, clip_model_from_open_clip
from vipo.rewards.imagereward import ImageRewardModel, blip_tokenizer, imagereward_modules_from_state_dict
from vipo.rewards.pickscore import PickScore

P = len(spec.PROMPTS)


def _load(name):
    with open(os.path.join(spec.FIXTURE_DIR, f"{name}.json"), encoding="utf-8") as f:
        meta = json.load(f)
    arrays = dict(np.load(os.path.join(spec.FIXTURE_DIR, f"{name}.npz")))
    assert meta["prompts"] == spec.PROMPTS and [tuple(s) for s in meta["image_sizes"]] == spec.IMAGE_SIZES, \
        "the fixture was made from other inputs: regenerate it with " + meta["regenerate"]
    return meta, {k: torch.from_numpy(v) for k, v in arrays.items()}


def _images(arrays):
    """The stored 8-bit images (also rebuilt from their seed: both must agree) as [1, 3, H, W] floats."""
    flat, out, at = arrays["images"].numpy(), [], 0
    for img in spec.fixture_images():
        np.testing.assert_array_equal(flat[at:at + img.size].reshape(img.shape), img)
        at += img.size
        out.append(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)  # [1, 3, H, W]
    return out


def _padded(rows, length):
    return torch.tensor([r + [0] * (length - len(r)) for r in rows])  # [P, length]


# ------------------------------------------------------------------------------------------ HPS
@pytest.fixture(scope="module")
def hps(tmp_path_factory):
    meta, arrays = _load("hps")
    gz = str(tmp_path_factory.mktemp("hps") / "bpe.txt.gz")
    merges = {int(r): tuple(m) for r, m in meta["merges"].items()}
    spec.write_sparse_bpe_gz(gz, merges, meta["num_merges"])
    sd = random_open_clip_state_dict(**meta["architecture"])
    assert spec.checksum(sd) == pytest.approx(meta["weights_checksum"], rel=1e-6), "seeded weights differ"
    w = meta["head_width"]
    scorer = HPSv21.from_model(clip_model_from_open_clip(sd, w, w), CLIPBPETokenizer.from_bpe_gz(gz))
    return meta, arrays, scorer, merges


def test_hps_token_ids_equal_open_clip(hps):
    """Single characters, punctuation, digits, unicode, HTML entities, truncation: id for id."""
    meta, _, scorer, _ = hps
    ours = scorer.tokenizer(spec.PROMPTS)  # [P, 77]
    ref = _padded(meta["token_ids"], 77)
    for i, prompt in enumerate(spec.PROMPTS):
        assert ours[i].tolist() == ref[i].tolist(), f"token ids differ for {prompt!r}"
    assert ref[0, 1] == 320 and ref[1, 1] == 267 and ref[2, 1] == 279  # 'a</w>', ',</w>', '8</w>' in open_clip


def test_hps_pixels_equal_hpsv2_preprocess(hps):
    _, arrays, scorer, _ = hps
    for i, img in enumerate(_images(arrays)):
        torch.testing.assert_close(scorer.preprocess(img)[0], arrays["pixels"][i], atol=2e-6, rtol=0)


def _check_embeddings_and_scores(scorer, arrays, score_atol):
    """Each image against all prompts: embeddings [P, E] and scores [P] equal the reference's row."""
    with torch.no_grad():
        for i, img in enumerate(_images(arrays)):
            batch = img.expand(P, -1, -1, -1)  # [P, 3, H, W]
            img_e, txt_e = scorer.embed(batch, spec.PROMPTS)  # [P, E] each
            torch.testing.assert_close(img_e, arrays["image_embeds"][i].expand(P, -1), atol=1e-5, rtol=0)
            torch.testing.assert_close(txt_e, arrays["text_embeds"], atol=1e-5, rtol=0)
            torch.testing.assert_close(scorer(batch, spec.PROMPTS), arrays["scores"][i], atol=score_atol, rtol=0)


def test_hps_embeddings_and_scores_equal_hpsv2(hps):
    _check_embeddings_and_scores(hps[2], hps[1], score_atol=1e-5)


# ------------------------------------------------------------------------------------ PickScore
@pytest.fixture(scope="module")
def pick(tmp_path_factory, hps):
    meta, arrays = _load("pickscore")
    folder = str(tmp_path_factory.mktemp("pick_tok"))
    write_bpe_files(folder, spec.full_merge_list(hps[3], hps[0]["num_merges"]))
    model = CLIPModel(CLIPConfig(**meta["config"])).eval()
    assert spec.seeded_fill_(model, meta["seed"]) == pytest.approx(meta["weights_checksum"], rel=1e-6)
    return meta, arrays, PickScore.from_model(model, CLIPTokenizer.from_pretrained(folder))


def test_pickscore_token_ids_from_write_bpe_files_equal_open_clip_vocabulary(pick):
    meta, _, scorer = pick
    ours = scorer.tokenizer(spec.PROMPTS, padding=True, truncation=True, max_length=77)["input_ids"]
    for prompt, a, b in zip(spec.PROMPTS, ours, meta["token_ids"]):
        assert a[:len(b)] == b, f"token ids differ for {prompt!r}"


def test_pickscore_pixels_embeddings_and_scores_equal_reference(pick):
    _, arrays, scorer = pick
    for i, img in enumerate(_images(arrays)):
        torch.testing.assert_close(scorer.preprocess(img)[0], arrays["pixels"][i], atol=1e-6, rtol=0)
    _check_embeddings_and_scores(scorer, arrays, score_atol=1e-5)


# ---------------------------------------------------------------------------------- ImageReward
@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    meta, arrays = _load("imagereward")
    folder = tmp_path_factory.mktemp("bert")
    vocab = {int(i): t for i, t in meta["bert_vocab"].items()}
    spec.write_sparse_wordpiece_vocab(str(folder / "vocab.txt"), vocab, meta["bert_vocab_size"])
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    sd = random_imagereward_state_dict(**meta["architecture"])
    assert spec.checksum({k: v for k, v in sd.items() if not k.startswith(("blip.vision_proj", "blip.text_proj"))}) \
        == pytest.approx(meta["weights_checksum"], rel=1e-6)
    modules = imagereward_modules_from_state_dict(sd, head_dim=meta["head_dim"])
    return meta, arrays, ImageRewardModel.from_model(*modules, blip_tokenizer(str(folder)))


def test_imagereward_token_ids_equal_blip_tokenizer(ir):
    meta, _, scorer = ir
    ours = scorer.tokenizer(spec.PROMPTS, padding="max_length", truncation=True, max_length=35)["input_ids"]
    for prompt, a, b in zip(spec.PROMPTS, ours, meta["token_ids"]):
        assert a == b, f"token ids differ for {prompt!r}"


def test_imagereward_pixels_and_scores_equal_package(ir):
    _, arrays, scorer = ir
    with torch.no_grad():
        for i, img in enumerate(_images(arrays)):
            torch.testing.assert_close(scorer.preprocess(img)[0], arrays["pixels"][i], atol=1e-6, rtol=0)
            torch.testing.assert_close(scorer(img.expand(P, -1, -1, -1), spec.PROMPTS), arrays["scores"][i],
                                       atol=1e-5, rtol=0)
