"""``python -m vipo.eval``: evaluate a run folder or a base generator on a prompt set.

    python -m vipo.eval run=results/runs/<id> metrics=[reward,toy]
    python -m vipo.eval run=<dir> prompts=hpdv2 metrics=[hps,pickscore,imagereward] \\
        metric_kwargs.hps.path_or_id=/ckpt/HPS_v2.1_compressed.pt samples_per_prompt=1 batch_size=8
    python -m vipo.eval generator=toy prompts=toy metrics=[toy] num_steps=20
    python -m vipo.eval generator=flux generator.path_or_id=<dir> prompts=drawbench-mini metrics=[hps]
    python -m vipo.eval vbench_results=<folder of VBench *_eval_results.json> [run=<dir>]
    python -m vipo.eval experiment=wan_videoalign checkpoint=<run> metrics=[vbench] \\
        [vbench.dimensions=[temporal_flickering]] [vbench.prompts=standard|<file>] [vbench.samples_per_prompt=5]

Options (key=value): run (or checkpoint), experiment, generator (+ generator.<kwarg>), reward (+ reward.<kwarg>),
prompts (a registered set: toy, drawbench-mini, hpdv2, hpdv2-<style>; or a text file), metrics, metric_kwargs.<metric>.<kwarg>,
samples_per_prompt, num_steps, seed, batch_size, use_ema, device, max_prompts, grid_samples, out,
vbench_results, vbench.<option> (docs/vbench.md; ``vipo.eval.vbench_eval.VBenchOptions``).
See ``vipo.eval.run.EvalArgs``.
"""

from __future__ import annotations

import sys
from typing import Sequence

from vipo.config import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    from vipo.eval.run import evaluate, evaluate_vbench, parse_args
    from vipo.prompts import PromptSetUnavailable

    try:
        args = parse_args(argv)
        if args.vbench_results is not None:
            evaluate_vbench(args)
        elif "vbench" in args.metrics:
            from vipo.eval.vbench_eval import evaluate_vbench_suite

            evaluate_vbench_suite(args)
        else:
            evaluate(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PromptSetUnavailable, KeyError, ValueError, RuntimeError) as e:
        print(f"error: {str(e).strip(chr(34) + chr(39))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
