"""Run the published VBench package on a folder of videos; executed by the VBench environment's Python.

    .venv-vbench/bin/python vipo/eval/vbench_runner.py request.json

This file imports only the standard library and ``vbench`` (never vipo: it runs beside transformers 4.33 and
numpy < 2). ``request.json``::

    {"videos": folder, "out": folder, "dimensions": [...], "mode": "vbench_standard" | "custom_input",
     "device": "cpu" | "cuda", "cache_dir": folder, "full_info": VBench_full_info.json or null,
     "skip": {dimension: reason}, "modules": {dimension: [module, ...]}}

Each dimension runs on its own (``VBench.evaluate(name=<dimension>, dimension_list=[dimension], local=True)``),
so its results land in ``<out>/<dimension>_eval_results.json`` and one dimension that fails does not stop the
others. ``<out>/report.json`` maps every dimension to ``{"status": "ok", "file", "seconds"}``, ``{"status":
"missing", "wanted": [...]}`` or ``{"status": "error", "error": one line}``. A ``wget`` that refuses is put first
on PATH: VBench downloads absent weights with wget, and this runner never downloads.
"""

import importlib.util
import json
import os
import stat
import sys
import tempfile
import time
import traceback

# this file's folder (vipo/eval, which holds vipo's own vbench.py) must not shadow the vbench package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _no_download_path() -> str:
    folder = tempfile.mkdtemp(prefix="vbench-nowget-")
    script = os.path.join(folder, "wget")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho \"vipo: VBench tried to download $*; put the file in its cache folder\" >&2\n"
                "exit 1\n")
    os.chmod(script, os.stat(script).st_mode | stat.S_IEXEC)
    return folder


def main(request_path: str) -> int:
    with open(request_path, encoding="utf-8") as f:
        req = json.load(f)
    os.environ["VBENCH_CACHE_DIR"] = req["cache_dir"]  # read by vbench.utils at import
    os.environ["PATH"] = _no_download_path() + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from vbench import VBench

    out = req["out"]
    os.makedirs(out, exist_ok=True)
    report = {}
    report_path = os.path.join(out, "report.json")
    device = torch.device(req.get("device", "cpu"))
    full_info = req.get("full_info") or os.path.join(os.path.dirname(importlib.util.find_spec("vbench").origin),
                                                     "VBench_full_info.json")
    for dim in req["dimensions"]:
        if dim in req.get("skip", {}):
            report[dim] = {"status": "missing", "wanted": req["skip"][dim]}
            continue
        absent = [m for m in req.get("modules", {}).get(dim, []) if importlib.util.find_spec(m) is None]
        if absent:
            report[dim] = {"status": "missing", "wanted": [f"python package {m} in the VBench environment"
                                                           for m in absent]}
            continue
        print(f"[vbench] {dim}: evaluating {req['videos']}", flush=True)
        tic = time.perf_counter()
        try:
            bench = VBench(device, full_info, out)
            bench.evaluate(videos_path=req["videos"], name=dim, dimension_list=[dim], local=True,
                           mode=req.get("mode", "vbench_standard"))
            report[dim] = {"status": "ok", "file": os.path.join(out, f"{dim}_eval_results.json"),
                           "seconds": time.perf_counter() - tic}
        except BaseException as e:  # one dimension's failure is reported, the others still run
            if isinstance(e, KeyboardInterrupt):
                raise
            traceback.print_exc()
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:400]
            report[dim] = {"status": "error", "error": msg, "seconds": time.perf_counter() - tic}
        print(f"[vbench] {dim}: {report[dim]['status']} ({time.perf_counter() - tic:.1f}s)", flush=True)
        with open(report_path, "w", encoding="utf-8") as f:  # after every dimension: a crash keeps what ran
            json.dump(report, f, indent=1)
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
