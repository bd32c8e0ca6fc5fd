"""DINOv2 / ResNet / SAM / timm backbones from tiny random transformers configs (no downloads)."""

import pytest
import torch

from vipo.backbones import BACKBONES


def _dinov2_config(registers: int = 0):
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=14,
              image_size=56)
    return Dinov2WithRegistersConfig(num_register_tokens=registers, **kw) if registers else Dinov2Config(**kw)


def _frozen(bb):
    bb.train()
    return not bb.net.training and not any(p.requires_grad for p in bb.parameters())


def test_dinov2_grid_follows_its_resize_and_drops_cls():
    torch.manual_seed(0)
    bb = BACKBONES.get("dinov2").from_config(_dinov2_config(), resolution=28)
    assert _frozen(bb)
    imgs = torch.rand(2, 3, 50, 70)
    # short side 50 -> 28 (2 patches); long side 70 * 28 / 50 = 39.2 -> 42 (3 patches)
    assert bb.grid(50, 70) == (2, 3)
    f = bb.features(imgs)
    assert f.shape == (2, 2, 3, 32) and f.dtype == torch.float32
    # independent reference: resize + ImageNet-normalise by hand, drop the CLS token
    x = torch.nn.functional.interpolate(imgs, size=(28, 42), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        ref = bb.net(pixel_values=x).last_hidden_state  # [2, 1 + 6, 32]
    assert ref.shape[1] == 7
    assert torch.allclose(f.reshape(2, 6, 32), ref[:, 1:], atol=1e-5)
    assert bb.features(torch.rand(1, 3, 64, 64)).shape == (1, 2, 2, 32)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        bb.features(torch.rand(3, 64, 64))


def test_dinov2_with_registers_drops_cls_and_registers(tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    cfg = _dinov2_config(registers=4)
    net = AutoModel.from_config(cfg)
    net.save_pretrained(tmp_path / "dino-reg")
    from vipo.backbones.dinov2 import DinoV2Backbone

    bb = DinoV2Backbone(str(tmp_path / "dino-reg"), resolution=56)  # local folder, as for real checkpoints
    assert bb.n_prefix == 5
    f = bb.features(torch.rand(1, 3, 56, 56))
    assert f.shape == (1, 4, 4, 32)
    with pytest.raises(FileNotFoundError, match="no/such/dinov2"):
        DinoV2Backbone("/no/such/dinov2")


def test_resnet_last_stage_grid():
    from transformers import ResNetConfig

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic")
    bb = BACKBONES.get("resnet").from_config(cfg, resolution=64)
    assert _frozen(bb) and bb.stride == 32
    f = bb.features(torch.rand(2, 3, 100, 150))  # -> 64 x 96 pixels -> 2 x 3 cells of 32 px
    assert f.shape == (2, 2, 3, 32) and f.dtype == torch.float32
    assert bb.grid(100, 150) == (2, 3)
    with pytest.raises(FileNotFoundError, match="no/such/resnet"):
        BACKBONES.build("resnet", "./no/such/resnet")


def test_sam_image_embedding_grid():
    from transformers import SamVisionConfig

    torch.manual_seed(0)
    cfg = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
                          output_channels=16, window_size=4, global_attn_indexes=[1], mlp_dim=64, num_pos_feats=16)
    bb = BACKBONES.get("sam").from_config(cfg)
    assert _frozen(bb)
    f = bb.features(torch.rand(2, 3, 48, 80))  # any input -> the encoder's 64 x 64 -> 8 x 8 grid after the neck
    assert f.shape == (2, 8, 8, 16) and f.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="no/such/sam"):
        BACKBONES.build("sam", "/no/such/sam")


def test_timm_backbone_fails_clearly_without_the_extra():
    try:
        import timm  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match=r"vipo\[timm\]"):
            BACKBONES.build("timm")
    else:
        pytest.skip("timm is importable here")
