"""The toy training commands run end to end for a few steps (slow: imports diffusers, trains)."""

import json

import pytest
import torch

from vipo.toy.nets import load_classifier, read_weights

pytestmark = pytest.mark.slow


def test_pretrain_split_run_equals_one_run(tmp_path, capsys):
    from vipo.generators.toy import ToyGenerator
    from vipo.toy import pretrain

    def args(name, *extra):
        return ["--steps", "4", "--batch", "8", "--threads", "1", "--ckpt-dir", str(tmp_path / name),
                "--ckpt-every", "100", "--log-every", "1", "--out", str(tmp_path / f"{name}.safetensors"),
                "--eval-samples", "0", "--warmup", "2", *extra]

    pretrain.main(args("whole"))
    pretrain.main(args("split", "--stop-at", "2"))  # checkpoint at step 2, no weights yet
    assert not (tmp_path / "split.safetensors").exists()
    pretrain.main(args("split"))  # resumes at step 2 and finishes
    log = capsys.readouterr().out
    assert "stopped at step 2 of 4" in log and "resumed from" in log and "at step 2" in log
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=False)["step"] == 4
    whole, config = read_weights(tmp_path / "whole.safetensors")
    split, _ = read_weights(tmp_path / "split.safetensors")
    assert config["resolution"] == 32 and all(torch.equal(whole[k], split[k]) for k in whole)  # RNG state resumed
    assert next(iter(whole.values())).dtype == torch.float32  # stored fp16, read back as fp32
    ToyGenerator(weights=str(tmp_path / "whole.safetensors"))  # loads into the generator
    with pytest.raises(ValueError, match="belongs to a different run"):
        pretrain.main(args("split", "--lr", "5e-4"))


def test_pretrain_loss_falls(tmp_path, capsys):
    from vipo.toy import pretrain

    pretrain.main(["--steps", "30", "--batch", "16", "--threads", "1", "--ckpt-dir", str(tmp_path / "ck"),
                   "--out", str(tmp_path / "g.safetensors"), "--eval-samples", "0", "--log-every", "10",
                   "--warmup", "5", "--precision", "fp32"])
    losses = [float(line.split()[3]) for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert losses[-1] < 0.8 * losses[0]


def test_train_classifier_few_steps(tmp_path):
    from vipo.toy import train_classifier

    out = tmp_path / "c.safetensors"
    _, metrics = train_classifier.train(train_classifier.parse_args(
        ["--role", "backbone", "--steps", "60", "--batch", "32", "--test-size", "256", "--out", str(out)]))
    saved = json.loads(out.with_suffix(".metrics.json").read_text())
    assert saved["clean"] == metrics["clean"] and saved["steps"] == 60
    assert metrics["clean"]["colour_acc"] > 0.6  # colour is learnt within tens of steps; shape takes longer
    net = load_classifier(out)
    assert net.config == {"width": 32} and not any(p.requires_grad for p in net.parameters())
