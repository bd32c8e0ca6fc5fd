"""Seconds per video of VBench's temporal_flickering (the dimension that reads no weights) on this machine's CPU.

    python checks/time_vbench_flicker.py [--videos 4] [--height 720 --width 1280 --frames 81] [--env .venv-vbench]

Writes ``--videos`` mp4 files of the given size (a slowly drifting random pattern, H.264 as vipo writes them)
and runs the real package on them through vipo's runner (custom prompts mode); prints the runner's wall time
for the dimension divided by the number of videos, and the time to start the environment (import vbench).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from vipo.eval.vbench_eval import RUNNER, env_python, write_mp4

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--fps", type=int, default=16)
    ap.add_argument("--env", default=".venv-vbench")
    args = ap.parse_args()
    py = env_python(args.env)
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp) / "videos"
        videos.mkdir()
        g = torch.Generator().manual_seed(0)
        tic = time.perf_counter()
        for k in range(args.videos):
            base = torch.rand(3, 1, args.height // 8, args.width // 8, generator=g)  # [3, 1, h, w]
            drift = torch.linspace(0, 0.2, args.frames).view(1, -1, 1, 1)  # [1, F, 1, 1]
            small = (base + drift * torch.rand(3, 1, 1, 1, generator=g)).clamp(0, 1)  # [3, F, h, w]
            video = torch.nn.functional.interpolate(small, size=(args.height, args.width), mode="bilinear")
            write_mp4(video, videos / f"timing video {k}-0.mp4", args.fps)  # [3, F, H, W]
        write_s = time.perf_counter() - tic
        out = Path(tmp) / "results"
        out.mkdir()
        req = {"videos": str(videos), "out": str(out), "dimensions": ["temporal_flickering"], "mode": "custom_input",
               "device": "cpu", "cache_dir": str(Path(tmp) / "cache"), "skip": {}, "full_info": None, "modules": {}}
        (out / "request.json").write_text(json.dumps(req))
        tic = time.perf_counter()
        subprocess.run([str(py), "-c", "import vbench, torch, torchvision"], check=True)
        import_s = time.perf_counter() - tic
        tic = time.perf_counter()
        subprocess.run([str(py), str(RUNNER), str(out / "request.json")], check=True, capture_output=True)
        total_s = time.perf_counter() - tic
        report = json.loads((out / "report.json").read_text())["temporal_flickering"]
    dim_s = report["seconds"]
    print(f"{args.videos} videos of {args.frames} frames at {args.height}x{args.width}: "
          f"writing {write_s / args.videos:.2f} s/video; VBench temporal_flickering {dim_s / args.videos:.2f} s/video "
          f"({dim_s:.1f} s for the dimension); runner process {total_s:.1f} s in all; import vbench {import_s:.1f} s")


if __name__ == "__main__":
    main()
