"""One full trainer iteration on tiny random FLUX, SD3.5, Wan2.1, Wan2.2 (two experts; TI2V-5B layout) and
Qwen-Image, FLUX.2 and Z-Image generators with the redness reward, through the same config path as `python train.py`."""

import json

import pytest
import torch

import tiny  # noqa: F401  (tiny_test backbone)
import tiny_dit_models
import tiny_models
from vipo.config import load
from vipo.generators import GENERATORS
from vipo.train import run

for _name, _fn in [("tiny_flux", tiny_models.tiny_flux), ("tiny_sd3", tiny_models.tiny_sd3),
                   ("tiny_wan", tiny_models.tiny_wan), ("tiny_wan22", tiny_models.tiny_wan22),
                   ("tiny_wan22_5b", tiny_models.tiny_wan22_5b), ("tiny_qwen_image", tiny_dit_models.tiny_qwen_image),
                   ("tiny_flux2", tiny_dit_models.tiny_flux2), ("tiny_z_image", tiny_dit_models.tiny_z_image)]:
    if _name not in GENERATORS:
        GENERATORS.register(_name)(_fn)


def tiny_run(tmp_path, generator: str, *extra: str):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na big blue car\n")
    cfg, raw = load([f"generator.name={generator}", "~generator.weights", "reward=redness", "logger=none",
                     "train.iterations=1", "train.prompts_per_iter=2", "train.group_size=2", "train.micro_batch=2",
                     "train.lr=1e-3", "train.optimizer_steps_per_iter=1", "sde.num_steps=3", "eval.every=0", "eval.num_samples=2", "eval.num_steps=2",
                     "eval.metrics=[reward]", "eval.grid_samples=2", f"train.prompts={prompts}",
                     f"results_root={tmp_path}", "run_id=r", *extra])
    return cfg, raw


@pytest.mark.parametrize("generator,backbone", [("tiny_flux", "efficientnet"), ("tiny_sd3", "tiny_test"),
                                                ("tiny_wan", "tiny_test"), ("tiny_wan22", "tiny_test"),
                                                ("tiny_wan22_5b", "tiny_test"), ("tiny_qwen_image", "tiny_test"),
                                                ("tiny_flux2", "tiny_test"), ("tiny_z_image", "tiny_test")])
def test_one_trainer_iteration(tmp_path, generator, backbone):
    cfg, raw = tiny_run(tmp_path, generator, f"backbone={backbone}" if backbone != "tiny_test" else
                        "backbone.name=tiny_test")
    summary = run(cfg, raw)
    row = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()][-1]
    assert summary["status"] == "complete" and torch.isfinite(torch.tensor(row["reward_mean"]))
    assert row["ratio_min"] == row["ratio_max"] == 1.0  # the first (only) optimizer step is on-policy: exactly 1
    assert 0.0 <= row["map_mean"] <= 1.0 and row["map_std"] > 0  # a real, non-constant map
    state = torch.load(tmp_path / "r/checkpoints/last.pt", weights_only=False)
    assert state["trainable"] and all("lora" in k for k in state["trainable"])  # LoRA only
    experts = {k.split(".")[0] for k in state["trainable"]}
    assert experts == ({"transformer", "transformer_2"} if generator == "tiny_wan22" else {"transformer"})
    # the update changed the LoRA weights (lora_B starts at zero)
    assert any(v.abs().sum() > 0 for k, v in state["trainable"].items() if "lora_B" in k)
