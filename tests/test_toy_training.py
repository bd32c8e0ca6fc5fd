"""The toy training commands run end to end for a few steps (slow: imports diffusers, trains)."""

import json

import pytest
import torch

from vipo.toy.nets import load_classifier, read_weights

pytestmark = pytest.mark.slow


def test_pretrain_few_steps_then_resume(tmp_path, capsys):
    from vipo.generators.toy import ToyGenerator
    from vipo.toy import pretrain

    out, ck = tmp_path / "g.safetensors", tmp_path / "ck"
    common = ["--batch", "8", "--threads", "1", "--ckpt-dir", str(ck), "--ckpt-every", "2", "--log-every", "1",
              "--out", str(out), "--eval-samples", "0", "--warmup", "2"]
    pretrain.main(["--steps", "2", *common])
    first = read_weights(out)[0]
    pretrain.main(["--steps", "4", *common])  # resumes at step 2 and runs two more
    log = capsys.readouterr().out
    assert "resumed from" in log and "step     4" in log and "step     1" in log
    assert torch.load(ck / "last.pt", weights_only=False)["step"] == 4
    state, config = read_weights(out)
    assert config["resolution"] == 32 and any(not torch.equal(state[k], first[k]) for k in state)
    assert next(iter(state.values())).dtype == torch.float32  # stored fp16, read back as fp32
    ToyGenerator(weights=str(out))  # loads into the generator


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
