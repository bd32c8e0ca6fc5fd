"""Write the scorer golden fixtures (tests/fixtures/scorers/) from the reference packages.

    make scorer-fixtures        # builds .venv-ref if needed, then runs the two lines below
    .venv-ref/bin/python checks/make_scorer_fixtures.py --only hps,pickscore
    (cd .venv-ref && PYTHONPATH=tf4 bin/python ../checks/make_scorer_fixtures.py --only imagereward)

Runs in the reference environment only (torchvision, hpsv2, image-reward; see checks/ref_env.sh). For each
scorer it feeds the inputs of ``tests/_scorer_fixture_spec.py`` (prompts, 8-bit images of odd sizes, a small
architecture whose weights come from a seed) to the *reference package's own code* and stores what comes out:
token ids, preprocessed pixels, L2-normalised embeddings and scores. ``tests/test_scorer_fixtures.py`` checks
our ports against these files in the default suite, without torchvision. Weights are never stored: both sides
rebuild them from the seed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import unicodedata

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _scorer_fixture_spec as spec  # noqa: E402
from _references import import_imagereward, laion_clip_tokenizer, open_clip_simple_tokenizer  # noqa: E402
from _scorer_refs import random_imagereward_state_dict, random_open_clip_state_dict  # noqa: E402

REGENERATE = "make scorer-fixtures (checks/make_scorer_fixtures.py, in .venv-ref)"


def _pils():
    from PIL import Image

    return [Image.fromarray(a) for a in spec.fixture_images()]


def _versions(*names):
    return {n: importlib.metadata.version(n) for n in names}


def _save(name: str, meta: dict, arrays: dict) -> None:
    os.makedirs(spec.FIXTURE_DIR, exist_ok=True)
    meta = {"regenerate": REGENERATE, "prompts": spec.PROMPTS, "image_sizes": spec.IMAGE_SIZES, **meta}
    with open(os.path.join(spec.FIXTURE_DIR, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=0)
    arrays = {k: (v.detach().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()}
    np.savez_compressed(os.path.join(spec.FIXTURE_DIR, f"{name}.npz"), images=_image_stack(), **arrays)
    print(f"wrote {name}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items()))


def _image_stack():
    """The 8-bit images, flattened and concatenated (shapes are in the JSON)."""
    return np.concatenate([a.reshape(-1) for a in spec.fixture_images()])


def _trim(ids: torch.Tensor):
    """Rows of ids without the trailing padding zeros (open_clip pads with 0)."""
    out = []
    for row in ids.tolist():
        while row and row[-1] == 0:
            row.pop()
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------ HPS
def hps() -> None:
    from hpsv2.src.open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from hpsv2.src.open_clip.transform import image_transform

    ref_tok, oc_tok = open_clip_simple_tokenizer()  # the tokenizer behind hpsv2's get_tokenizer('ViT-H-14')
    ids = oc_tok.tokenize(spec.PROMPTS)  # [P, 77]
    words = []  # the byte-encoded words BPE sees, to keep only the merges they can use
    for prompt in spec.PROMPTS:  # open_clip's cleaning (ftfy, HTML) and, for PickScore, transformers' (NFC only)
        for text in (oc_tok.whitespace_clean(oc_tok.basic_clean(prompt)).lower(),
                     unicodedata.normalize("NFC", " ".join(prompt.split())).lower()):
            words += ["".join(ref_tok.byte_encoder[b] for b in w.encode("utf-8"))
                      for w in oc_tok.re.findall(ref_tok.pat, text)]
    merges = spec.merges_used_by(words, ref_tok.bpe_ranks)

    a = spec.HPS_SMALL
    model = CLIP(embed_dim=a["embed"], vision_cfg=CLIPVisionCfg(layers=a["v_layers"], width=a["v_width"],
                 head_width=spec.HPS_HEAD_WIDTH, patch_size=a["patch"], image_size=a["image"]),
                 text_cfg=CLIPTextCfg(context_length=a["ctx"], vocab_size=a["vocab"], width=a["t_width"],
                                      heads=a["t_width"] // spec.HPS_HEAD_WIDTH, layers=a["t_layers"]),
                 quick_gelu=False, output_dict=True)
    sd = random_open_clip_state_dict(**a)
    model.load_state_dict(sd, strict=True)
    model.eval()
    preprocess = image_transform(a["image"], is_train=False, resize_longest_max=True)  # hpsv2's preprocess_val
    with torch.no_grad():
        pixels = torch.stack([preprocess(p) for p in _pils()])  # [I, 3, S, S]
        out = model(pixels, ids)  # hpsv2.score: image_features @ text_features.T
        img, txt = out["image_features"], out["text_features"]  # [I, E], [P, E], L2-normalised
    _save("hps", {"reference": _versions("hpsv2", "torch", "torchvision"), "architecture": a,
                  "head_width": spec.HPS_HEAD_WIDTH, "weights_checksum": spec.checksum(sd),
                  "token_ids": _trim(ids), "num_merges": 49152 - 256 - 2,
                  "merges": {str(r): list(m) for r, m in sorted(merges.items())}},
          {"pixels": pixels, "image_embeds": img, "text_embeds": txt, "scores": img @ txt.T})


# ------------------------------------------------------------------------------------ PickScore
def pickscore() -> None:
    """PickScore's reference code path (README ``calc_probs``) with transformers' PIL CLIP image processor
    and a CLIP tokenizer whose vocab.json / merges.txt are open_clip's own vocabulary (the laion layout)."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = laion_clip_tokenizer()
    s = spec.IMAGE_SIZE
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": s},
                                                                    crop_size={"height": s, "width": s}),
                              tokenizer=tok)
    model = CLIPModel(CLIPConfig(**spec.PICK_CONFIG)).eval()
    total = spec.seeded_fill_(model, spec.PICK_SEED)
    with torch.no_grad():
        image_inputs = processor(images=_pils(), return_tensors="pt")
        text_inputs = processor(text=spec.PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = model.get_image_features(**image_inputs)
        txt = model.get_text_features(**text_inputs)
        img, txt = [getattr(e, "pooler_output", e) for e in (img, txt)]
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)  # [I, E], [P, E]
        scores = model.logit_scale.exp() * img @ txt.T  # [I, P]
    lengths = text_inputs["attention_mask"].sum(-1).tolist()
    _save("pickscore", {"reference": _versions("transformers", "torch"), "config": spec.PICK_CONFIG,
                        "seed": spec.PICK_SEED, "weights_checksum": total,
                        "token_ids": [r[:n] for r, n in zip(text_inputs["input_ids"].tolist(), lengths)]},
          {"pixels": image_inputs["pixel_values"], "image_embeds": img, "text_embeds": txt, "scores": scores})


# ---------------------------------------------------------------------------------- ImageReward
def imagereward() -> None:
    """The package's ``ImageReward.score`` on a small BLIP (its own ViT, med BERT and MLP classes)."""
    pkg = import_imagereward()
    ir, BertConfig, BertModel, VisionTransformer = pkg.module, pkg.BertConfig, pkg.BertModel, pkg.VisionTransformer
    a = spec.IR_SMALL
    heads = a["v_width"] // spec.IR_HEAD_DIM
    ref = ir.ImageReward.__new__(ir.ImageReward)
    torch.nn.Module.__init__(ref)
    ref.device, ref.mean, ref.std = "cpu", 0.16717362830052426, 1.0333394966054072
    ref.blip = torch.nn.Module()
    ref.blip.visual_encoder = VisionTransformer(img_size=a["image"], patch_size=a["patch"], embed_dim=a["v_width"],
                                                depth=a["v_layers"], num_heads=heads)
    med = dict(hidden_size=a["t_width"], num_hidden_layers=a["t_layers"], num_attention_heads=heads,
               intermediate_size=4 * a["t_width"], vocab_size=a["vocab"], max_position_embeddings=a["max_pos"],
               encoder_width=a["v_width"], add_cross_attention=True, hidden_act="gelu", layer_norm_eps=1e-12,
               hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, type_vocab_size=2, pad_token_id=0)
    ref.blip.text_encoder = BertModel(config=BertConfig(**med), add_pooling_layer=False)
    ref.blip.tokenizer = pkg.init_tokenizer()  # 'bert-base-uncased' is the folder in the working directory
    ref.mlp = ir.MLP(a["t_width"])
    ref.preprocess = ir._transform(a["image"])
    sd = {k: v for k, v in random_imagereward_state_dict(**a).items() if not k.startswith(("blip.vision_proj",
                                                                                           "blip.text_proj"))}
    ref.load_state_dict(sd, strict=True)
    ref.eval()
    tok = ref.blip.tokenizer
    enc = tok(spec.PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    vocab, keep = tok.vocab, {}
    for text in spec.PROMPTS:  # every vocabulary entry WordPiece could look up for these prompts
        for word in tok.basic_tokenizer.tokenize(text, never_split=tok.all_special_tokens):
            for i in range(len(word)):
                for j in range(i + 1, len(word) + 1):
                    for piece in (word[i:j], "##" + word[i:j]):
                        if piece in vocab:
                            keep[vocab[piece]] = piece
    for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        keep[vocab[t]] = t
    pils = _pils()
    with torch.no_grad():
        pixels = torch.stack([ref.preprocess(p) for p in pils])  # [I, 3, S, S]
        scores = torch.tensor([[ref.score(t, p) for t in spec.PROMPTS] for p in pils])  # [I, P]
    _save("imagereward", {"reference": _versions("image-reward", "transformers", "torch", "torchvision"),
                          "architecture": a, "head_dim": spec.IR_HEAD_DIM, "weights_checksum": spec.checksum(sd),
                          "token_ids": enc["input_ids"].tolist(), "bert_vocab_size": len(vocab),
                          "bert_vocab": {str(i): t for i, t in sorted(keep.items())}},
          {"pixels": pixels, "scores": scores})


MAKERS = {"hps": hps, "pickscore": pickscore, "imagereward": imagereward}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="hps,pickscore", help="comma-separated subset of " + ", ".join(MAKERS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        MAKERS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
