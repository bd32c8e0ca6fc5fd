"""Full-size comparison of our scorers with the reference packages on the same random-weight models.

    make check-scorers      # builds .venv-ref (checks/ref_env.sh) and runs the three lines below
    .venv-ref/bin/python checks/check_scorers.py --only hps
    .venv-ref/bin/python checks/check_scorers.py --only pickscore
    (cd .venv-ref && PYTHONPATH=tf4:.. bin/python ../checks/check_scorers.py --only imagereward)

For each scorer it builds the *reference* model at full size (HPSv2.1: open_clip ViT-H-14; PickScore: CLIP
ViT-H-14 in transformers; ImageReward: BLIP ViT-L + BERT-base) with random weights (no download), converts
those weights with our converter, feeds both the same 8-bit images and prompts, and prints the largest
differences: token ids (how many differ), pixels, embeddings and scores. Exit status 1 when a score differs
by more than 1e-4. About 2-3 minutes and 9 GB per scorer on 2 CPU cores; run one scorer per process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings

import numpy as np
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _references import import_imagereward, laion_clip_tokenizer, open_clip_simple_tokenizer  # noqa: E402

PROMPTS = ["a photo of a red fox sitting in fresh snow, golden hour",
           "an astronaut riding a horse on the moon, digital art",
           "a, 8! “quoted” café <|endoftext|> 3.14",
           "a bowl of ramen, studio lighting, 85mm " * 6]  # > 77 CLIP tokens: truncation
SIZES = [(512, 512), (384, 640), (300, 200), (225, 401)]  # (H, W): square, wide, tall, odd
SCORE_TOLERANCE = 1e-4


def _images(seed: int = 0):
    """Smooth random images plus a little noise, as [1, 3, H, W] floats on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in SIZES:
        low = torch.rand(1, 3, 8, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)  # [1,3,H,W]
        img = (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1)
        out.append((img * 255).round() / 255)
    return out


def _pil(img: torch.Tensor):
    from PIL import Image

    return Image.fromarray((img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


class Diffs(dict):
    def update_max(self, key: str, value) -> None:
        self[key] = max(self.get(key, 0.0), float(value))

    def report(self, name: str) -> bool:
        for key, value in self.items():
            print(f"  {name:12s} {key:32s} {value:.3e}")
        ok = self["score"] <= SCORE_TOLERANCE
        print(f"  {name:12s} {'score within 1e-4':32s} {'yes' if ok else 'NO'}")
        return ok


def _ids_differ(ours: torch.Tensor, ref: torch.Tensor) -> int:
    return int((ours.cpu() != ref.cpu()).sum())


# ------------------------------------------------------------------------------------------ HPS
def check_hps(device: str) -> Diffs:
    import hpsv2.src.open_clip as oc
    from hpsv2.src.open_clip.tokenizer import default_bpe

    from vipo.rewards.clip_utils import CLIPBPETokenizer
    from vipo.rewards.hps import HPSv21, clip_model_from_open_clip

    torch.manual_seed(0)
    model, _, preprocess_val = oc.create_model_and_transforms(  # as hpsv2.img_score.initialize_model, no weights
        "ViT-H-14", None, precision="fp32", device=device, jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False)
    model.eval()
    ref_tok = oc.get_tokenizer("ViT-H-14")
    ours = HPSv21.from_model(clip_model_from_open_clip(model.state_dict()), CLIPBPETokenizer.from_bpe_gz(default_bpe()),
                             device=device)
    d = Diffs()
    with torch.no_grad():
        for img, prompt in zip(_images(0), PROMPTS):
            ref_px = preprocess_val(_pil(img)).unsqueeze(0).to(device)  # [1, 3, 224, 224]
            ref_ids = ref_tok([prompt]).to(device)  # [1, 77]
            out = model(ref_px, ref_ids)
            ref_score = (out["image_features"] * out["text_features"]).sum(-1)  # hpsv2.score: diag(img @ txt.T)
            img_emb, txt_emb = ours.embed(img.to(device), [prompt])
            d.update_max("token ids (count differing)", _ids_differ(ours.tokenizer([prompt]), ref_ids))
            d.update_max("pixels", (ours.preprocess(img.to(device)) - ref_px).abs().max())
            d.update_max("image embedding", (img_emb - out["image_features"]).abs().max())
            d.update_max("text embedding", (txt_emb - out["text_features"]).abs().max())
            d.update_max("score", (ours(img.to(device), [prompt]) - ref_score).abs().max())
    return d


# ------------------------------------------------------------------------------------ PickScore
def check_pickscore(device: str) -> Diffs:
    """Reference: PickScore's README code path (processor for pixels and text, get_*_features, normalise,
    ``logit_scale.exp() * cos``) with transformers' PIL CLIP image processor, which is what
    ``AutoProcessor`` gave before transformers 5 made the torchvision one the default."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from vipo.rewards.clip_utils import write_bpe_files
    from vipo.rewards.pickscore import PickScore

    ref_tok = laion_clip_tokenizer()
    simple, _ = open_clip_simple_tokenizer()
    ours_dir = tempfile.mkdtemp()  # our own vocabulary files from the merge list alone
    write_bpe_files(ours_dir, [m for m, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])])
    cfg = CLIPConfig(text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                      num_attention_heads=16, hidden_act="gelu", vocab_size=49408),
                     vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                        num_attention_heads=16, patch_size=14, image_size=224, hidden_act="gelu"),
                     projection_dim=1024)  # PickScore_v1 = CLIP ViT-H-14
    torch.manual_seed(0)
    model = CLIPModel(cfg).to(device).eval()
    ref_proc = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=ref_tok)
    ours = PickScore.from_model(model, CLIPTokenizer.from_pretrained(ours_dir), device=device)
    d = Diffs()
    with torch.no_grad():
        for img, prompt in zip(_images(2), PROMPTS):
            image_inputs = ref_proc(images=[_pil(img)], return_tensors="pt").to(device)
            text_inputs = ref_proc(text=[prompt], padding=True, truncation=True, max_length=77,
                                   return_tensors="pt").to(device)
            img_e = model.get_image_features(**image_inputs)
            txt_e = model.get_text_features(**text_inputs)
            img_e, txt_e = [getattr(e, "pooler_output", e) for e in (img_e, txt_e)]
            img_e, txt_e = img_e / img_e.norm(dim=-1, keepdim=True), txt_e / txt_e.norm(dim=-1, keepdim=True)
            ref_score = model.logit_scale.exp() * (txt_e * img_e).sum(-1)
            ours_ids = ours.tokenizer([prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
            o_img, o_txt = ours.embed(img.to(device), [prompt])
            d.update_max("token ids (count differing)", _ids_differ(ours_ids["input_ids"], text_inputs["input_ids"]))
            d.update_max("pixels", (ours.preprocess(img.to(device)) - image_inputs["pixel_values"]).abs().max())
            d.update_max("image embedding", (o_img - img_e).abs().max())
            d.update_max("text embedding", (o_txt - txt_e).abs().max())
            d.update_max("score", (ours(img.to(device), [prompt]) - ref_score).abs().max())
    return d


# ---------------------------------------------------------------------------------- ImageReward
MED_CONFIG = {  # BLIP's med_config.json as ImageReward uses it (encoder_width is reset to the ViT width)
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}


def check_imagereward(device: str) -> Diffs:
    """Runs with the working directory .venv-ref: BLIP loads 'bert-base-uncased' from the folder of that name."""
    ir = import_imagereward().module
    from vipo.rewards.imagereward import ImageRewardModel, blip_tokenizer, imagereward_modules_from_state_dict

    if not os.path.isdir("bert-base-uncased"):
        raise FileNotFoundError("run from .venv-ref, which holds the bert-base-uncased vocabulary folder")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(MED_CONFIG, f)
    torch.manual_seed(0)
    ref = ir.ImageReward(med_config=f.name, device=device).to(device).eval()
    os.unlink(f.name)
    for p in ref.mlp.parameters():  # the reference initialises the head near zero; widen it so scores differ
        torch.nn.init.normal_(p, std=0.05)
    ours = ImageRewardModel.from_model(*imagereward_modules_from_state_dict(ref.state_dict()),
                                       blip_tokenizer("bert-base-uncased"), device=device)
    d = Diffs()
    with torch.no_grad():
        for img, prompt in zip(_images(1), PROMPTS):
            ref_ids = ref.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35,
                                         return_tensors="pt").input_ids
            ids = ours.tokenizer([prompt], padding="max_length", truncation=True, max_length=35,
                                 return_tensors="pt").input_ids
            d.update_max("token ids (count differing)", _ids_differ(ids, ref_ids))
            d.update_max("pixels", (ours.preprocess(img.to(device)) - ref.preprocess(_pil(img)).to(device)).abs().max())
            d.update_max("score", abs(float(ours(img.to(device), [prompt])) - ref.score(prompt, _pil(img))))
    return d


CHECKS = {"hps": check_hps, "pickscore": check_pickscore, "imagereward": check_imagereward}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="hps,pickscore", help="comma-separated subset of " + ", ".join(CHECKS))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=r".*(timm\.models\.layers|pkg_resources).*")  # the references' imports
    torch.backends.cuda.matmul.allow_tf32 = False  # compare in true fp32
    torch.backends.cudnn.allow_tf32 = False
    ok = True
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in CHECKS:
            ap.error(f"unknown scorer {name!r}; choose from {', '.join(CHECKS)}")
        print(f"[{name}] max |ours - reference| (torch {torch.__version__}, transformers {transformers.__version__}, "
              f"{args.device})", flush=True)
        ok &= CHECKS[name](args.device).report(name)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
