"""The toy world: procedural shape images, a small rectified-flow generator and two classifiers.

- ``data``: 32x32 images of one coloured shape on a textured grey background; ``PROMPTS``, ``sample_batch``.
- ``nets``: the classifier, the generator's UNet, self-describing safetensors weight files.
- ``pretrain`` / ``train_classifier``: the commands that produced ``weights/`` (see ``weights/MODEL_CARD.md``).
- ``augment``: colour augmentations that keep the judge honest when GRPO drifts the colours.
- ``figures``: the README's sample and PSM-map grids.
"""
