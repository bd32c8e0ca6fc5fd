"""Any timm model as a backbone (optional extra: ``pip install vipo[timm]``).

timm imports torchvision, which does not load on the CPU-only development machines, so the import
is lazy and fails with a clear message. ViTs return their patch tokens (prefix/CLS/register tokens
dropped) on the patch grid; CNNs return their last feature map. Resizing uses the model's
``pretrained_cfg`` input size unless ``resolution`` is given; normalisation uses its mean/std.
"""

from __future__ import annotations

import torch

from vipo.backbones._common import FrozenBackbone, check_images, freeze, prepare, resolve_dtype
from vipo.backbones.base import Backbone


def _timm():
    try:
        import timm
    except Exception as e:  # ImportError, or torchvision's operator errors on CPU-only builds
        raise ImportError(
            "the 'timm' backbone needs the optional extra: pip install 'vipo[timm]' "
            f"(timm and a torchvision build that matches torch); import failed with: {e!r}") from e
    return timm


class TimmBackbone(FrozenBackbone, Backbone):
    def __init__(
        self,
        path_or_id: str = "vit_large_patch14_dinov2.lvd142m",  # timm model name ("hf-hub:..." works too)
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        resolution: int | None = None,  # square input side; None: the model's pretrained input size
        *,
        pretrained: bool = True,
    ):
        super().__init__()
        timm = _timm()
        kwargs = {"img_size": resolution} if resolution and "vit" in path_or_id else {}
        net = timm.create_model(path_or_id, pretrained=pretrained, num_classes=0, **kwargs)
        self.net = freeze(net.to(device=device, dtype=resolve_dtype(dtype)))
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        self.size = resolution or int(cfg.get("input_size", (3, 224, 224))[-1])
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.n_prefix = int(getattr(net, "num_prefix_tokens", 0))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        x = prepare(images, (self.size, self.size), self.mean, self.std, next(self.net.parameters()).dtype,
                    self.device)
        out = self.net.forward_features(x)
        if out.ndim == 4:  # CNN: [B, C, h, w]
            return out.permute(0, 2, 3, 1).float()
        tokens = out[:, self.n_prefix:]  # [B, h*w, C]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise ValueError(f"cannot put {tokens.shape[1]} tokens on a square grid")
        return tokens.reshape(x.shape[0], side, side, -1).float()  # [B, h, w, C]
