"""PickScore on transformers' ``CLIPModel``.

Reference: yuvalkirstain/PickScore (README ``calc_probs``): ``AutoProcessor`` of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` for pixels and text (``padding=True, truncation=True,
max_length=77``), ``AutoModel`` ``yuvalkirstain/PickScore_v1``; score =
``exp(logit_scale) * cos(text_embedding, image_embedding)``.

Pixels: ``preprocess="reference"`` runs transformers' PIL (torchvision-free) CLIP image processor on the
8-bit images (shortest side -> 224 bicubic, centre crop 224, /255, OpenAI mean/std), which is what the
reference computes on PIL inputs. ``preprocess="torch"`` is a differentiable float approximation.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import CLIPModel

from vipo.rewards.base import Reward, attribute_set
from vipo.rewards.clip_utils import check_images, normalize, resize_shortest_and_center_crop, to_uint8_hwc
from vipo.rewards.loading import resolve

PICKSCORE_ID = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def pil_clip_image_processor_class():
    """transformers' torchvision-free CLIP image processor: ``CLIPImageProcessorPil`` (transformers 5) or the
    slow ``CLIPImageProcessor`` (transformers 4, PIL / numpy)."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def _processor_parts(path_or_id: str):
    """The slow PIL CLIP image processor and the CLIP tokenizer from a processor folder / hub id."""
    from transformers import AutoTokenizer

    folder = resolve(path_or_id, what="CLIP processor")
    return pil_clip_image_processor_class().from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


class PickScore(Reward):
    """PickScore reward, float32 [B]: ``exp(logit_scale) * cos`` (about 20-23 for good images)."""

    def __init__(self, path_or_id: str = PICKSCORE_ID, processor_path_or_id: str = PICKSCORE_PROCESSOR_ID,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 preprocess: str = "reference"):
        super().__init__()
        model = CLIPModel.from_pretrained(resolve(path_or_id, what="PickScore model"))
        image_processor, tokenizer = _processor_parts(processor_path_or_id)
        self._attach(model, tokenizer, image_processor, device, dtype, preprocess)

    @classmethod
    def from_model(cls, model: CLIPModel, tokenizer, image_processor=None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, preprocess: str = "reference") -> "PickScore":
        """Wrap an in-memory model; ``image_processor`` defaults to a PIL CLIP processor at the model's size."""
        if image_processor is None:
            s = int(model.config.vision_config.image_size)
            image_processor = pil_clip_image_processor_class()(size={"shortest_edge": s},
                                                               crop_size={"height": s, "width": s})
        obj = cls.__new__(cls)
        Reward.__init__(obj)
        obj._attach(model, tokenizer, image_processor, device, dtype, preprocess)
        return obj

    def _attach(self, model, tokenizer, image_processor, device, dtype, preprocess: str) -> None:
        if preprocess not in ("reference", "torch"):
            raise ValueError(f"PickScore: preprocess must be 'reference' or 'torch', got {preprocess!r}")
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.preprocess_mode = preprocess

    def differentiable_path(self):
        """The float (torch) preprocessing instead of the reference one through 8-bit PIL images."""
        return attribute_set(self, "preprocess_mode", "torch")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised pixels [B, 3, S, S]."""
        check_images(images, "PickScore")
        if self.preprocess_mode == "torch":
            size = int(self.image_processor.crop_size["height"])
            px = resize_shortest_and_center_crop(images.float(), size)  # [B, 3, S, S]
            return normalize(px, self.image_processor.image_mean, self.image_processor.image_std)
        out = self.image_processor(images=to_uint8_hwc(images), return_tensors="pt")
        return out["pixel_values"].to(images.device)  # [B, 3, S, S]

    def embed(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised image and text embeddings, each [B, D]."""
        p = next(self.model.parameters())
        pixels = self.preprocess(images).to(device=p.device, dtype=p.dtype)  # [B, 3, S, S]
        text = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)  # [B, D]
        txt = self.model.text_projection(self.model.text_model(
            input_ids=text["input_ids"].to(p.device), attention_mask=text["attention_mask"].to(p.device)
        ).pooler_output)  # [B, D]
        return torch.nn.functional.normalize(img.float(), dim=-1), torch.nn.functional.normalize(txt.float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"PickScore scores images [B, 3, H, W]; got shape {tuple(images.shape)}")
        img, txt = self.embed(images, prompts)
        return self.model.logit_scale.float().exp() * (img * txt).sum(-1)  # [B]
