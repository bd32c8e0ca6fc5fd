"""Multi-process helpers over ``torch.distributed`` (a no-op in a single process).

Launch with ``accelerate launch`` or ``torchrun``: each process rolls out its own prompts, rewards are
gathered so group statistics see every sample, and gradients are averaged after each backward pass.
Averaging gradients by hand (instead of wrapping the model in DDP) keeps the ``Generator`` interface
free to call any method, not only ``forward``. With ``train.fsdp`` the generator's network is sharded
with FSDP2 (``shard``): its hooks sit on the sharded modules' own forward, so they fire whatever method
of the generator calls them.
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist


def init() -> None:
    """Join the process group when launched with WORLD_SIZE > 1 (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(_shutdown)


def _shutdown() -> None:
    """Leave the process group before the interpreter exits: a gloo group still alive at exit can abort the
    process ("terminate called without an active exception") after the run has finished."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equally-shaped tensors from all ranks along dim 0, in rank order."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def average_gradients(params) -> None:
    """Average gradients over ranks; sharded (FSDP) parameters are already reduce-scattered."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None and not is_sharded(p):
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj):
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ----------------------------------------------------------------------------------- FSDP (torch FSDP2)
def is_sharded(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded (DTensor) parameter; a collective, so every rank must call it."""
    return t.full_tensor() if is_sharded(t) else t


def copy_full_(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy a whole tensor into ``dst``, sharding it the way ``dst`` is sharded."""
    with torch.no_grad():
        if is_sharded(dst):
            from torch.distributed.tensor import distribute_tensor

            dst.copy_(distribute_tensor(src.to(dst.device, dst.dtype), dst.device_mesh, dst.placements))
        else:
            dst.copy_(src)


def shard_roots(generator: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules to shard: the generator's ``fsdp_roots`` (attribute names; Wan2.2's two experts) or
    ``fsdp_root`` attribute name, else its transformer/unet."""
    names = getattr(generator, "fsdp_roots", None) or []
    roots = [getattr(generator, n) for n in names if isinstance(getattr(generator, n, None), torch.nn.Module)]
    if roots:
        return roots
    for name in (getattr(generator, "fsdp_root", None), "transformer", "unet", "net"):
        if name and isinstance(getattr(generator, name, None), torch.nn.Module):
            return [getattr(generator, name)]
    raise ValueError(f"{type(generator).__name__}: no module to shard (set an 'fsdp_root' attribute)")


def shard(generator: torch.nn.Module) -> int:
    """FSDP2: shard every block of the generator's network (each entry of its outermost ModuleLists) and then
    the network itself across all ranks (each network on its own for Wan2.2's two experts). Forward passes
    through those modules gather the weights, backward reduce-scatters (averages) the gradients. Returns the
    number of sharded units."""
    from torch.distributed.fsdp import fully_shard

    units = 0
    for root in shard_roots(generator):
        done: list[str] = []  # sharded blocks; ModuleLists inside them (attention's to_out) stay in their block
        for name, module in root.named_modules():
            if isinstance(module, torch.nn.ModuleList) and not any(name.startswith(d + ".") for d in done):
                for i, block in enumerate(module):
                    if any(p.requires_grad for p in block.parameters()):
                        fully_shard(block)
                        done.append(f"{name}.{i}")
                        units += 1
        fully_shard(root)
        units += 1
    return units
