"""Full-size plans (about a minute each on 2 CPU cores): run with ``pytest -m slow``."""

import pytest

pytestmark = pytest.mark.slow


def test_flux_hps_full_fine_tuning_needs_fsdp_on_80gb():
    from vipo.config import load
    from vipo.plan.cli import summarise
    from vipo.plan.estimate import estimate

    cfg, _ = load(["experiment=flux_hps"])
    s = summarise(estimate(cfg, gpus=8), 8, "h100", 0.4, 1.5)
    assert s["params"]["total"] == s["params"]["trainable"] == 11_901_408_320
    m = s["memory_bytes_per_gpu"]
    assert m["weights"] == m["grads"] == 2 * 11_901_408_320  # bf16
    assert s["verdict"].startswith("does not fit on 80 GB") and "fits with FSDP over 2 GPUs" in s["verdict"]
    f = s["flops_per_gpu_per_iteration"]
    # 12 samples x 8 steps of one forward; 12 x 5 trained steps x (forward + backward + recompute = 4 forwards)
    fwd = f["rollout"] / (12 * 8)
    assert f["update"] == pytest.approx(12 * 5 * 4 * fwd, rel=0.01)


def test_anchor_flops_follow_the_published_time_ratio():
    """DanceGRPO (14 trained steps) and MixGRPO (4) ran at 291 s and 151 s: our FLOPs give the same ratio
    within 5%, i.e. the same achieved throughput."""
    from vipo.plan.anchors import anchor_flops, anchors

    a = anchors()
    dance, mix = anchor_flops("DanceGRPO"), anchor_flops("MixGRPO")
    assert dance["rollout"] == mix["rollout"]
    flop_ratio = dance["total"] / mix["total"]
    time_ratio = a["DanceGRPO"]["seconds_per_iteration"] / a["MixGRPO"]["seconds_per_iteration"]
    assert flop_ratio == pytest.approx(time_ratio, rel=0.05)
