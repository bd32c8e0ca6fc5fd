"""DINOv2 patch features (transformers ``Dinov2Model``; default ``facebook/dinov2-large`` as in the
official ViPO code).

Input handling (our own, no image processor): images are resized (bilinear, antialiased) so that
the short side is ``resolution`` pixels, aspect kept, each side rounded to a multiple of the patch
size 14, then ImageNet-normalised. The default 518 (= 37 x 14, DINOv2's native evaluation size)
gives a 37 x 37 grid for square images, close to the official script, which feeds 512 x 512 images
(a 36 x 36 grid); 224 (16 x 16) is the cheap option. Output: patch tokens of the last layer (after
the final layer norm) without the CLS and register tokens, ``[B, h, w, C]`` float32.
"""

from __future__ import annotations

import torch

from vipo.backbones._common import (
    IMAGENET_MEAN, IMAGENET_STD, FrozenBackbone, check_images, check_pretrained, freeze, prepare, resolve_dtype,
    short_side_size,
)
from vipo.backbones.base import Backbone


class DinoV2Backbone(FrozenBackbone, Backbone):
    def __init__(
        self,
        path_or_id: str = "facebook/dinov2-large",  # hub id or local folder (also *-with-registers models)
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        resolution: int = 518,  # short side in pixels, rounded to a multiple of 14
        *,
        model=None,  # an already built Dinov2Model (tests); overrides path_or_id
    ):
        super().__init__()
        if model is None:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(check_pretrained(path_or_id), dtype=resolve_dtype(dtype))
        self.net = freeze(model.to(device=device, dtype=resolve_dtype(dtype)))
        self.patch = int(self.net.config.patch_size)
        self.n_prefix = 1 + int(getattr(self.net.config, "num_register_tokens", 0) or 0)  # CLS + registers
        self.resolution = resolution

    @classmethod
    def from_config(cls, config, **kwargs) -> "DinoV2Backbone":
        """A randomly initialised model from a ``Dinov2Config`` (or with-registers config)."""
        from transformers import AutoModel

        return cls(model=AutoModel.from_config(config), **kwargs)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Feature grid (h, w) for input images of this size."""
        h, w = short_side_size(height, width, self.resolution, self.patch)
        return h // self.patch, w // self.patch

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        size = short_side_size(images.shape[-2], images.shape[-1], self.resolution, self.patch)
        x = prepare(images, size, IMAGENET_MEAN, IMAGENET_STD, next(self.net.parameters()).dtype, self.device)
        tokens = self.net(pixel_values=x).last_hidden_state[:, self.n_prefix:]  # [B, h*w, C]
        h, w = size[0] // self.patch, size[1] // self.patch
        return tokens.reshape(x.shape[0], h, w, -1).float()  # [B, h, w, C]
