"""ResNet feature maps (transformers ``ResNetModel``; default ``microsoft/resnet-50``).

Images are resized so the short side is ``resolution`` pixels (aspect kept, sides rounded to a
multiple of the network stride 32) and ImageNet-normalised. Output: the last stage's feature map
(stride 32; 2048 channels for ResNet-50) as ``[B, h, w, C]`` float32. The default 448 gives a
14 x 14 grid for square images (224, the classification size, gives only 7 x 7).
"""

from __future__ import annotations

import torch

from vipo.backbones._common import (
    IMAGENET_MEAN, IMAGENET_STD, FrozenBackbone, check_images, check_pretrained, freeze, prepare, resolve_dtype,
    short_side_size,
)
from vipo.backbones.base import Backbone


class ResNetBackbone(FrozenBackbone, Backbone):
    def __init__(
        self,
        path_or_id: str = "microsoft/resnet-50",  # hub id or local folder
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        resolution: int = 448,  # short side in pixels, rounded to a multiple of 32
        *,
        model=None,  # an already built ResNetModel (tests)
    ):
        super().__init__()
        if model is None:
            from transformers import ResNetModel

            model = ResNetModel.from_pretrained(check_pretrained(path_or_id), dtype=resolve_dtype(dtype))
        self.net = freeze(model.to(device=device, dtype=resolve_dtype(dtype)))
        cfg = self.net.config
        self.stride = 4 * 2 ** (len(cfg.hidden_sizes) - 1)  # stem /4, then /2 per later stage
        self.resolution = resolution

    @classmethod
    def from_config(cls, config, **kwargs) -> "ResNetBackbone":
        from transformers import ResNetModel

        return cls(model=ResNetModel(config), **kwargs)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        h, w = short_side_size(height, width, self.resolution, self.stride)
        return h // self.stride, w // self.stride

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        size = short_side_size(images.shape[-2], images.shape[-1], self.resolution, self.stride)
        x = prepare(images, size, IMAGENET_MEAN, IMAGENET_STD, next(self.net.parameters()).dtype, self.device)
        fmap = self.net(pixel_values=x).last_hidden_state  # [B, C, h, w]
        return fmap.permute(0, 2, 3, 1).float()  # [B, h, w, C]
