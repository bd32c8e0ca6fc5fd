"""Plan a run before launching it: parameters, FLOPs, memory and GPU-hours from the real architectures.

``arch`` (published configs as data, built on the meta device), ``flops`` (``torch.utils.flop_counter`` and an
analytic count), ``rewards`` (reward and map-backbone FLOPs), ``memory`` (saved-tensor accounting, states),
``estimate`` (one run's cost from its config), ``gpus`` (peaks as data, SLURM resources), ``cli``
(``python -m vipo.plan experiment=...``; ``sweep.py ablation=|study=... plan``). See docs/costs.md.
"""
