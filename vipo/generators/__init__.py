"""Generators behind one interface (``base.Generator``), built by name from ``GENERATORS``."""

from vipo.generators.base import Cond, Generator, cat_cond, index_cond, repeat_cond
from vipo.registry import Registry

GENERATORS: Registry = Registry("generator")

__all__ = ["GENERATORS", "Generator", "Cond", "index_cond", "repeat_cond", "cat_cond"]

# Built-ins, imported on first use (diffusers is slow to import).
GENERATORS.register_lazy("toy", "vipo.generators.toy:ToyGenerator")
GENERATORS.register_lazy("flux", "vipo.generators.flux:FluxGenerator")
GENERATORS.register_lazy("wan", "vipo.generators.wan:WanGenerator")
GENERATORS.register_lazy("sd3", "vipo.generators.sd3:SD3Generator")
GENERATORS.register_lazy("flux2", "vipo.generators.flux2:Flux2Generator")
GENERATORS.register_lazy("z_image", "vipo.generators.z_image:ZImageGenerator")
GENERATORS.register_lazy("qwen_image", "vipo.generators.qwen_image:QwenImageGenerator")
