"""SAM image-encoder embeddings (transformers ``SamModel`` vision encoder; default
``facebook/sam-vit-base``).

SAM's ViT has fixed absolute position embeddings, so images are resized (bilinear, antialiased) to
the encoder's square input (1024 x 1024 for the released models; SAM's own processor instead
resizes the long side and pads; a plain resize keeps every pixel of the map on the image, and the
map is resized back to the latent grid anyway), then ImageNet-normalised. Output: the image
embeddings after the neck, 64 x 64 x 256 for the released models, as ``[B, h, w, C]`` float32.
"""

from __future__ import annotations

import torch

from vipo.backbones._common import (
    IMAGENET_MEAN, IMAGENET_STD, FrozenBackbone, check_images, check_pretrained, freeze, prepare, resolve_dtype,
)
from vipo.backbones.base import Backbone


class SamBackbone(FrozenBackbone, Backbone):
    def __init__(
        self,
        path_or_id: str = "facebook/sam-vit-base",  # hub id or local folder of a SamModel
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        *,
        encoder=None,  # an already built SamVisionEncoder (tests)
    ):
        super().__init__()
        if encoder is None:
            from transformers import SamModel

            encoder = SamModel.from_pretrained(check_pretrained(path_or_id), dtype=resolve_dtype(dtype)).vision_encoder
        self.net = freeze(encoder.to(device=device, dtype=resolve_dtype(dtype)))
        cfg = self.net.config
        side = lambda v: int(v[0] if isinstance(v, (list, tuple)) else v)  # noqa: E731
        self.size = side(cfg.image_size)  # square input side (1024)
        self.patch = side(cfg.patch_size)  # 16

    @classmethod
    def from_config(cls, config, **kwargs) -> "SamBackbone":
        """Random encoder from a ``SamConfig`` or ``SamVisionConfig``."""
        from transformers.models.sam.modeling_sam import SamVisionEncoder

        return cls(encoder=SamVisionEncoder(getattr(config, "vision_config", config)), **kwargs)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return self.size // self.patch, self.size // self.patch

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        x = prepare(images, (self.size, self.size), IMAGENET_MEAN, IMAGENET_STD,
                    next(self.net.parameters()).dtype, self.device)  # [B, 3, S, S]
        emb = self.net(pixel_values=x).last_hidden_state  # [B, C, S/p, S/p] (after the neck)
        return emb.permute(0, 2, 3, 1).float()  # [B, h, w, C]
