"""vipo: GRPO / ViPO post-training of flow-matching image and video generators."""

__version__ = "0.1.0"
