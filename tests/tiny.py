"""A tiny conditional flow generator and backbone for fast trainer tests (registered as tiny_test)."""

from __future__ import annotations

import torch
from torch import nn

from vipo.backbones import BACKBONES, Backbone
from vipo.generators import GENERATORS, Generator
from vipo.rewards import REWARDS, Reward
from vipo.sde import sigma_schedule

PROMPTS = ["a red square", "a blue circle", "a green star", "a white line"]


class TinyGenerator(Generator):
    def __init__(self, size: int = 8, hidden: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self.embed = nn.Embedding(len(PROMPTS) + 1, 4)
        self.net = nn.Sequential(nn.Conv2d(3 + 1 + 4, hidden, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(hidden, 3, 3, padding=1))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def latent_shape(self):
        return (3, self.size, self.size)

    def encode_prompts(self, prompts):
        return {"class_labels": torch.tensor([PROMPTS.index(p) for p in prompts], device=self.embed.weight.device)}

    def velocity(self, latents, sigma, cond):
        b, _, h, w = latents.shape
        s = sigma.view(b, 1, 1, 1).expand(b, 1, h, w)  # [B, 1, H, W]
        e = self.embed(cond["class_labels"])[:, :, None, None].expand(b, 4, h, w)  # [B, 4, H, W]
        return self.net(torch.cat([latents, s, e], dim=1))  # [B, 3, H, W]

    def decode(self, latents):
        return ((latents.float().clamp(-1, 1) + 1) / 2)  # [B, 3, H, W]

    def sigmas(self, num_steps):
        return sigma_schedule(num_steps, shift=1.0)


class TinyBackbone(Backbone):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 2, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=torch.Generator().manual_seed(1)))
        self.requires_grad_(False)

    def features(self, images):
        return self.conv(images).permute(0, 2, 3, 1)  # [B, h, w, C]


class NaNAfter(Reward):
    """Redness-like reward that returns NaN once it has been called ``after`` times."""

    def __init__(self, after: int = 2):
        super().__init__()
        self.after, self.calls = after, 0

    def score(self, images, prompts):
        self.calls += 1
        r = images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3)) / 1.0  # [B]
        if self.calls > self.after:
            r[1] = float("nan")
        return r


for name, reg, obj in [("tiny_test", GENERATORS, TinyGenerator), ("tiny_test", BACKBONES, TinyBackbone),
                       ("nan_after", REWARDS, NaNAfter)]:
    if name not in reg:
        reg.register(name)(obj)


class KillSwitch(Reward):
    """Mean red-minus-rest reward that SIGKILLs its own process on call number $VIPO_TEST_KILL_AT (if set), sleeps
    $VIPO_TEST_SLEEP seconds per call (if set), from call number $VIPO_TEST_HANG_AT on waits forever (if set) and
    waits for the file $VIPO_TEST_GATE to exist (if set)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def score(self, images, prompts):
        import os
        import signal
        import time

        self.calls += 1
        if os.environ.get("VIPO_TEST_KILL_AT") == str(self.calls):
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("VIPO_TEST_SLEEP"):
            time.sleep(float(os.environ["VIPO_TEST_SLEEP"]))
        while os.environ.get("VIPO_TEST_GATE") and not os.path.exists(os.environ["VIPO_TEST_GATE"]):
            time.sleep(0.05)
        if os.environ.get("VIPO_TEST_HANG_AT") and self.calls >= int(os.environ["VIPO_TEST_HANG_AT"]):
            while True:
                time.sleep(1)
        return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))  # [B]


if "kill_switch" not in REWARDS:
    REWARDS.register("kill_switch")(KillSwitch)
