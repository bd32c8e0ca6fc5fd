"""Memory predicted on the meta device vs measured on the CPU (torch's MemTracker over a real step of a tiny
FLUX transformer: forward, backward, AdamW step). Parameters, gradients and optimizer state must agree to the
byte; activations within 10%, the whole step's peak within 5% (docs/costs.md states these tolerances)."""

import pytest
import torch
from diffusers import FluxTransformer2DModel
from torch.distributed._tools.mem_tracker import MemTracker

from vipo.plan.flops import INPUTS, Shapes, _output
from vipo.plan.memory import activations, state_bytes

TINY = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
SHAPES = Shapes(batch=2, frames=1, height=32, width=32, text=16)


def _cat(snapshot, device):
    return {str(k).split(".")[-1]: v for k, v in snapshot[device].items()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_predicted_memory_matches_a_real_cpu_step(checkpointing):
    with torch.device("meta"):
        meta = FluxTransformer2DModel(**TINY)
    meta.train()
    inputs = INPUTS.get("flux")(meta, SHAPES, torch.float32)
    act = activations(meta, lambda: _output(meta(**inputs)))
    states = state_bytes(meta)

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**TINY)
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    real = {k: torch.randn(v.shape) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    opt = torch.optim.AdamW(model.parameters())
    tracker = MemTracker()
    tracker.track_external(model, opt)
    with tracker:
        for i in range(2):  # the second step has the optimizer state from the start
            if i == 1:
                tracker.reset_mod_stats()
            out = model(**real).sample
            after_forward = _cat(tracker.get_tracker_snapshot("current"),
                                 next(iter(tracker.get_tracker_snapshot("current"))))
            out.sum().backward()
            after_backward = _cat(tracker.get_tracker_snapshot("current"),
                                  next(iter(tracker.get_tracker_snapshot("current"))))
            opt.step()
            opt.zero_grad(set_to_none=True)
    peak = _cat(tracker.get_tracker_snapshot("peak"), next(iter(tracker.get_tracker_snapshot("peak"))))

    assert states.weights == after_forward["PARAM"] == 541_184
    assert states.grads == after_backward["GRAD"]
    assert states.optimizer == after_forward["OPT"]
    if not checkpointing:  # everything autograd keeps, plus the output tensor
        saved = after_forward["ACT"] - out.numel() * 4
        assert act.saved == pytest.approx(saved, rel=0.02)
    measured_act = peak["ACT"] + peak["TEMP"]
    assert act.peak(checkpointing) == pytest.approx(measured_act, rel=0.10)
    predicted = states.total + act.peak(checkpointing)
    assert predicted == pytest.approx(peak["Total"], rel=0.05)
    assert predicted >= 0.98 * peak["Total"]  # errs on the safe side
