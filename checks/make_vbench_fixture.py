"""Write tests/fixtures/vbench/: a full set of VBench result files and VBench's own totals for them.

    python checks/make_vbench_fixture.py --vbench <VBench checkout, or its git directory> [--commit REV]

1. ``full/<dimension>_eval_results.json`` for all 16 dimensions, in the format ``VBench.evaluate`` writes
   (``{dimension: [score, [{"video_path", "video_results"}, ...]]}``; the score is the mean of the per-video
   values), with scores drawn (seeded) inside each dimension's normalisation range; ``partial/`` is the same set
   without ``scene`` and ``dynamic_degree`` (the published script then scores them 0).
2. VBench's own ``scripts/cal_final_score.py`` (with its ``scripts/constant.py``, from the checkout at
   ``--commit``) is run on a zip of each set, as its README says (``--zip_file ... --model_name ...``); the
   three numbers it prints are stored in ``cal_final_score.json`` with the commit they came from.

tests/test_vbench_suite.py checks ``vipo.eval.vbench`` against these numbers. The VBench scripts are not part of
the pip package; they are read from the checkout, never copied into this repository.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "tests" / "fixtures" / "vbench"
DROPPED = ("scene", "dynamic_degree")  # absent from the partial set


def read_script(vbench: Path, commit: str, name: str) -> str:
    if (vbench / "scripts" / name).is_file():
        return (vbench / "scripts" / name).read_text(encoding="utf-8")
    return subprocess.run(["git", "--git-dir", str(vbench), "show", f"{commit}:scripts/{name}"], check=True,
                          capture_output=True, text=True).stdout


def revision(vbench: Path, commit: str) -> str:
    git = ["git", "--git-dir", str(vbench / ".git" if (vbench / ".git").exists() else vbench)]
    try:
        return subprocess.run([*git, "rev-parse", commit], check=True, capture_output=True, text=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def result_files(seed: int = 0) -> dict:
    from vipo.eval.vbench import NORMALIZATION
    from vipo.eval.vbench_suite import DIMENSIONS

    rng = random.Random(seed)
    files = {}
    for dim in DIMENSIONS:
        lo, hi = NORMALIZATION[dim.replace("_", " ")]
        per_video = [round(rng.uniform(lo + 0.1 * (hi - lo), hi), 6) for _ in range(4)]
        score = sum(per_video) / len(per_video)
        files[f"{dim}_eval_results.json"] = {dim: [score, [
            {"video_path": f"videos/prompt {k}-{k % 5}.mp4", "video_results": v} for k, v in enumerate(per_video)]]}
    return files


def cal_final_score(scripts: Path, files: dict, work: Path, tag: str) -> dict:
    """Zip ``files`` and run VBench's script on the zip; returns the three numbers it prints."""
    zip_path = work / f"{tag}.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for name, data in files.items():
            z.writestr(name, json.dumps(data, indent=4))
    out = subprocess.run([sys.executable, str(scripts / "cal_final_score.py"), "--zip_file", str(zip_path),
                          "--model_name", str(work / tag)], check=True, capture_output=True, text=True,
                         cwd=work).stdout
    found = dict(re.findall(r"\|\s*(quality|semantic|total) score\|([-0-9.e]+)\|", out))
    if set(found) != {"quality", "semantic", "total"}:
        raise RuntimeError(f"cal_final_score.py printed no totals:\n{out}")
    return {k: float(v) for k, v in found.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vbench", required=True, help="a VBench checkout, or its git directory")
    ap.add_argument("--commit", default="HEAD")
    args = ap.parse_args()
    vbench = Path(args.vbench)
    full = result_files()
    partial = {k: v for k, v in full.items() if not k.startswith(DROPPED)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scripts = work / "scripts"
        scripts.mkdir()
        for name in ("cal_final_score.py", "constant.py"):
            (scripts / name).write_text(read_script(vbench, args.commit, name), encoding="utf-8")
        totals = {"full": cal_final_score(scripts, full, work, "full"),
                  "partial": cal_final_score(scripts, partial, work, "partial")}
    for tag, files in (("full", full), ("partial", partial)):
        folder = OUT / tag
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        for name, data in files.items():
            (folder / name).write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    record = {"source": "Vchitect/VBench scripts/cal_final_score.py", "commit": revision(vbench, args.commit),
              "made_by": "checks/make_vbench_fixture.py", "partial_missing": list(DROPPED), **totals}
    (OUT / "cal_final_score.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
