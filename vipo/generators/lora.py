"""What part of a generator trains: LoRA adapters (peft) or the whole transformer.

``configure_training`` freezes the module, then either injects LoRA layers into the named
projections (``lora_rank > 0``) or unfreezes everything (``lora_rank == 0``: full fine-tuning),
and returns exactly the parameters an optimizer should see. Adapters are injected in place
(``peft.inject_adapter_in_model``), so the module keeps its class and forward signature.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

# Default LoRA targets per model (peft matches module names by suffix).
FLUX_LORA_TARGETS = (  # double-stream blocks: image + text projections; single blocks: to_q/k/v
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
)
FLUX2_LORA_TARGETS = (  # double-stream attention of both streams; single blocks' fused qkv + MLP input projection
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "to_qkv_mlp_proj",
)
SD3_LORA_TARGETS = (  # the Flow-GRPO SD3.5 list (scripts/train_sd3.py)
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
)
QWEN_IMAGE_LORA_TARGETS = (  # joint attention of both streams and both streams' MLPs (every dual-stream block)
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2",
)
Z_IMAGE_LORA_TARGETS = (  # attention and SwiGLU MLP of every single-stream block (refiners included)
    "attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
    "feed_forward.w1", "feed_forward.w2", "feed_forward.w3",
)
WAN_LORA_TARGETS = (  # self-attention (attn1) and text cross-attention (attn2) of every block
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
)


def configure_training(
    module: nn.Module,
    lora_rank: int,
    lora_alpha: Optional[float] = None,
    target_modules: Sequence[str] = (),
    init: str | bool = "gaussian",
    gradient_checkpointing: bool = False,
) -> List[nn.Parameter]:
    """Make ``module`` trainable as configured; return the trained parameters.

    lora_rank: adapter rank; 0 trains every parameter (full fine-tuning).
    lora_alpha: LoRA scale numerator (scale = alpha / rank); None -> 2 * rank, as in the
        published FLUX (rank 128, alpha 256) and SD3.5 (rank 32, alpha 64) setups.
    target_modules: module-name suffixes that receive adapters.
    init: peft ``init_lora_weights`` ("gaussian" as Flow-GRPO; B starts at zero either way,
        so the adapted model initially equals the base model).
    """
    if lora_rank < 0:
        raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
    module.requires_grad_(False)
    if lora_rank == 0:
        module.requires_grad_(True)
    else:
        from peft import LoraConfig, inject_adapter_in_model

        if not target_modules:
            raise ValueError("LoRA needs target_modules (module-name suffixes)")
        present = {name for name, _ in module.named_modules()}
        if not any(n == t or n.endswith("." + t) for t in target_modules for n in present):
            raise ValueError(f"none of the LoRA target modules {list(target_modules)} exist in "
                             f"{type(module).__name__}")
        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_rank,
                            init_lora_weights=init, target_modules=list(target_modules))
        inject_adapter_in_model(config, module)
        module.requires_grad_(False)  # peft leaves base weights alone; make sure only adapters train
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
                p.data = p.data.float()  # adapters in fp32 even on a bf16 base (peft casts inputs)
    if gradient_checkpointing:
        if not hasattr(module, "enable_gradient_checkpointing"):
            raise ValueError(f"{type(module).__name__} does not support gradient checkpointing")
        module.enable_gradient_checkpointing()
    return [p for p in module.parameters() if p.requires_grad]


def trainable_state_dict(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The trained tensors only (LoRA weights, or everything under full fine-tuning), by name."""
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def load_trainable_state_dict(module: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Inverse of ``trainable_state_dict``; every saved name must exist and be trainable."""
    params = dict(module.named_parameters())
    unknown = [n for n in state if n not in params or not params[n].requires_grad]
    if unknown:
        raise KeyError(f"not trainable parameters of {type(module).__name__}: {unknown[:5]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
