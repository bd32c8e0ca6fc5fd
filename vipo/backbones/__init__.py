"""Frozen vision backbones for the PSM, built by name from ``BACKBONES``."""

from vipo.backbones.base import Backbone
from vipo.registry import Registry

BACKBONES: Registry = Registry("backbone")

__all__ = ["BACKBONES", "Backbone"]

# Built-ins, imported on first use.
BACKBONES.register_lazy("toy", "vipo.backbones.toy:ToyBackbone")
BACKBONES.register_lazy("dinov2", "vipo.backbones.dinov2:DinoV2Backbone")
BACKBONES.register_lazy("resnet", "vipo.backbones.resnet:ResNetBackbone")
BACKBONES.register_lazy("sam", "vipo.backbones.sam:SamBackbone")
BACKBONES.register_lazy("efficientnet", "vipo.backbones.efficientnet:EfficientNetBackbone")
BACKBONES.register_lazy("timm", "vipo.backbones.timm:TimmBackbone")
