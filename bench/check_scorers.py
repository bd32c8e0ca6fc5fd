"""Compare our scorers with the reference packages on the same random-weight models and images.

    python bench/check_scorers.py [--device cuda] [--only hps,imagereward,pickscore]

For each scorer it builds the *reference* model with random weights (no checkpoint download), converts
those weights with our converter, feeds both the same 8-bit images and prompts, and prints the largest
absolute difference of token ids, pixels, embeddings and scores. A reference that cannot be imported
(hpsv2 / open_clip / ImageReward / torchvision missing or broken) is skipped with a message.
Needs torchvision, so it runs on a GPU machine with the ``timm`` extra, not on the CPU dev machines.
ImageReward and PickScore need the ``bert-base-uncased`` / CLIP tokenizer files (hub or cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPTS = ["a photo of a red fox sitting in fresh snow, golden hour",
           "an astronaut riding a horse on the moon, digital art",
           "a bowl of ramen, studio lighting, 85mm"]
SIZES = [(512, 512), (384, 640), (300, 200)]  # (H, W): square, wide, tall -> different resize / pad / crop


class Skip(Exception):
    pass


def _images(seed: int = 0):
    """Smooth random images (resampling differences stay representative), as [1,3,H,W] floats on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in SIZES:
        low = torch.rand(1, 3, 8, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        out.append((img * 255).round() / 255)
    return out


def _pil(img: torch.Tensor):
    from PIL import Image

    return Image.fromarray((img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _report(name: str, diffs: dict) -> None:
    for key, value in diffs.items():
        print(f"  {name:12s} {key:28s} max |ours - reference| = {value:.3e}")


def _import(what: str, fn):
    try:
        return fn()
    except Exception as err:  # ImportError, or torchvision's compiled ops failing to load
        raise Skip(f"cannot import {what}: {type(err).__name__}: {err}") from err


# ------------------------------------------------------------------------------------------ HPS
def check_hps(device: str) -> dict:
    oc = _import("hpsv2 (its bundled open_clip)", lambda: __import__("hpsv2.src.open_clip", fromlist=["x"]))
    from hpsv2.src.open_clip.tokenizer import default_bpe

    from vipo.rewards.clip_utils import CLIPBPETokenizer
    from vipo.rewards.hps import HPSv21, clip_model_from_open_clip

    torch.manual_seed(0)
    model, _, preprocess_val = oc.create_model_and_transforms(
        "ViT-H-14", None, precision="fp32", device=device, jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False)
    model.eval()
    ref_tok = oc.get_tokenizer("ViT-H-14")
    ours = HPSv21.from_model(clip_model_from_open_clip(model.state_dict()), CLIPBPETokenizer.from_bpe_gz(default_bpe()),
                             device=device)
    diffs = {"token ids": 0.0, "pixels": 0.0, "image embedding": 0.0, "text embedding": 0.0, "score": 0.0}
    with torch.no_grad():
        for img, prompt in zip(_images(), PROMPTS):
            ref_px = preprocess_val(_pil(img)).unsqueeze(0).to(device)
            ref_ids = ref_tok([prompt]).to(device)
            out = model(ref_px, ref_ids)
            ref_score = (out["image_features"] * out["text_features"]).sum(-1)
            px = ours.preprocess(img.to(device))
            ids = ours.tokenizer([prompt]).to(device)
            img_emb, txt_emb = ours.embed(img.to(device), [prompt])
            diffs["token ids"] = max(diffs["token ids"], float((ids != ref_ids).sum()))
            diffs["pixels"] = max(diffs["pixels"], float((px - ref_px).abs().max()))
            d_img = float((img_emb - out["image_features"]).abs().max())
            diffs["image embedding"] = max(diffs["image embedding"], d_img)
            diffs["text embedding"] = max(diffs["text embedding"], float((txt_emb - out["text_features"]).abs().max()))
            diffs["score"] = max(diffs["score"], float((ours(img.to(device), [prompt]) - ref_score).abs().max()))
    return diffs


# ---------------------------------------------------------------------------------- ImageReward
MED_CONFIG = {  # BLIP's med_config.json as ImageReward uses it (encoder_width is reset to the ViT width)
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}


def check_imagereward(device: str) -> dict:
    IR = _import("ImageReward", lambda: __import__("ImageReward.ImageReward", fromlist=["ImageReward"]))
    from vipo.rewards.imagereward import ImageRewardModel, blip_tokenizer, imagereward_modules_from_state_dict

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(MED_CONFIG, f)
    torch.manual_seed(0)
    ref = IR.ImageReward(med_config=f.name, device=device).to(device).eval()
    for p in ref.mlp.parameters():  # the reference initialises the head near zero; widen it so scores differ
        torch.nn.init.normal_(p, std=0.05)
    ours = ImageRewardModel.from_model(*imagereward_modules_from_state_dict(ref.state_dict()),
                                       blip_tokenizer("bert-base-uncased"), device=device)
    diffs = {"token ids": 0.0, "pixels": 0.0, "score": 0.0}
    with torch.no_grad():
        for img, prompt in zip(_images(1), PROMPTS):
            ref_px = ref.preprocess(_pil(img)).unsqueeze(0).to(device)
            ref_ids = ref.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35,
                                         return_tensors="pt").input_ids.to(device)
            ids = ours.tokenizer([prompt], padding="max_length", truncation=True, max_length=35,
                                 return_tensors="pt").input_ids.to(device)
            diffs["token ids"] = max(diffs["token ids"], float((ids != ref_ids).sum()))
            diffs["pixels"] = max(diffs["pixels"], float((ours.preprocess(img.to(device)) - ref_px).abs().max()))
            ref_score = ref.score(prompt, _pil(img))
            diffs["score"] = max(diffs["score"], abs(float(ours(img.to(device), [prompt])) - ref_score))
    os.unlink(f.name)
    return diffs


# ------------------------------------------------------------------------------------ PickScore
def check_pickscore(device: str) -> dict:
    _import("torchvision", lambda: __import__("torchvision.transforms"))
    oc = _import("open_clip or hpsv2 (for the CLIP BPE file)", _bpe_module)
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from vipo.rewards.clip_utils import write_bpe_files
    from vipo.rewards.pickscore import PickScore

    tok_dir = tempfile.mkdtemp()
    import gzip

    with gzip.open(oc.default_bpe()) as f:
        merges = [tuple(ln.split()) for ln in f.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1] if ln]
    write_bpe_files(tok_dir, merges)
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    cfg = CLIPConfig(text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                      num_attention_heads=16, hidden_act="gelu", vocab_size=49408),
                     vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                        num_attention_heads=16, patch_size=14, image_size=224, hidden_act="gelu"),
                     projection_dim=1024)
    torch.manual_seed(0)
    model = CLIPModel(cfg).to(device).eval()
    try:  # the processor the reference code gets from AutoProcessor (the default CLIP image processor)
        from transformers import CLIPImageProcessor

        ref_proc = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok)
    except Exception as err:
        raise Skip(f"cannot build transformers' default CLIP processor: {err}") from err
    ours = PickScore.from_model(model, tok, CLIPImageProcessorPil(), device=device)
    diffs = {"pixels": 0.0, "score": 0.0}
    with torch.no_grad():
        for img, prompt in zip(_images(2), PROMPTS):
            inputs = ref_proc(images=[_pil(img)], text=[prompt], padding=True, truncation=True, max_length=77,
                              return_tensors="pt").to(device)
            img_e = model.visual_projection(model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output)
            txt_e = model.text_projection(model.text_model(input_ids=inputs["input_ids"],
                                                           attention_mask=inputs["attention_mask"]).pooler_output)
            img_e, txt_e = img_e / img_e.norm(dim=-1, keepdim=True), txt_e / txt_e.norm(dim=-1, keepdim=True)
            ref_score = model.logit_scale.exp() * (txt_e * img_e).sum(-1)
            px = ours.preprocess(img.to(device))
            diffs["pixels"] = max(diffs["pixels"], float((px - inputs["pixel_values"]).abs().max()))
            diffs["score"] = max(diffs["score"], float((ours(img.to(device), [prompt]) - ref_score).abs().max()))
    return diffs


def _bpe_module():
    try:
        return __import__("open_clip.tokenizer", fromlist=["default_bpe"])
    except Exception:
        return __import__("hpsv2.src.open_clip.tokenizer", fromlist=["default_bpe"])


CHECKS = {"hps": check_hps, "imagereward": check_imagereward, "pickscore": check_pickscore}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=",".join(CHECKS), help="comma-separated subset of " + ", ".join(CHECKS))
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # compare in true fp32
    torch.backends.cudnn.allow_tf32 = False
    print("VideoAlign: not compared here (the reference is a research repo, not a package); "
          "see tests/test_rewards_videoalign.py for what is checked.")
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"[{name}]")
        try:
            _report(name, CHECKS[name](args.device))
        except Skip as why:
            print(f"  SKIP {name}: {why}")
        except Exception:
            print(f"  ERROR {name}:")
            traceback.print_exc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
