"""Toy-world throughput: procedural data (target: thousands of images per second) and the toy evaluator
(256 images, target < 2 s once the real-image statistics are cached).

    python bench/bench_toy.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vipo.eval.toy import ToyEvaluator  # noqa: E402
from vipo.toy.data import render_batch  # noqa: E402


def median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    render_batch(64, 0)  # warm-up
    data_s = median_seconds(lambda: render_batch(2048, 0))
    ev = ToyEvaluator()
    ev.reference()  # cached once per process
    b = render_batch(256, 32)
    eval_s = median_seconds(lambda: ev.evaluate(b.images, b.prompts))
    print(f"procedural data: {2048 / data_s:,.0f} images/s (target >= 1,000)")
    print(f"toy evaluator, 256 images: {eval_s:.2f} s (target < 2 s)")
    print(f"BENCH toy_images_per_second={2048 / data_s:.0f} toy_eval_seconds_256={eval_s:.3f}")


if __name__ == "__main__":
    main()
