"""Rewards with one signature (``base.Reward``), built by name from ``REWARDS``."""

from vipo.registry import Registry
from vipo.rewards.base import Reward

REWARDS: Registry = Registry("reward")

__all__ = ["REWARDS", "Reward"]

# Built-ins, imported on first use.
# -- rule-based and toy-world rewards (vipo/rewards/rules.py, vipo/rewards/toy.py)
REWARDS.register_lazy("redness", "vipo.rewards.rules:Redness")
REWARDS.register_lazy("object_brightness", "vipo.rewards.rules:ObjectBrightness")
REWARDS.register_lazy("uniform_background", "vipo.rewards.rules:UniformBackground")
REWARDS.register_lazy("centred", "vipo.rewards.rules:Centred")
REWARDS.register_lazy("toy_match", "vipo.rewards.toy:ToyPromptMatch")
# -- learned reward models (vipo/rewards/hps.py, pickscore.py, imagereward.py, videoalign.py)
REWARDS.register_lazy("hps", "vipo.rewards.hps:HPSv21")
REWARDS.register_lazy("pickscore", "vipo.rewards.pickscore:PickScore")
REWARDS.register_lazy("imagereward", "vipo.rewards.imagereward:ImageRewardModel")
REWARDS.register_lazy("videoalign", "vipo.rewards.videoalign:VideoAlign")
# -- weighted sum of registered rewards (vipo/rewards/multi.py)
REWARDS.register_lazy("multi", "vipo.rewards.multi:MultiReward")
