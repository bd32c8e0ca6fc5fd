"""The real VBench package on videos a tiny random Wan generates (slow; `make check-vbench`).

Needs the VBench environment (`make vbench-env`); skipped without it. Never downloads: the weight cache is an
empty temporary folder, so every dimension but temporal_flickering (which reads no weights) is missing, and one
dimension is given a broken weight file to show an error inside VBench is recorded, not a crash.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import TEXT_LEN, save_components, tiny_wan_components
from vipo.eval.__main__ import main
from vipo.eval.vbench_eval import env_python, package_info_file
from vipo.eval.vbench_suite import read_full_info, standard_suite, video_name

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
ENV = os.environ.get("VIPO_VBENCH_ENV", str(REPO / ".venv-vbench"))
if not (Path(ENV) / "bin" / "python").is_file():
    pytest.skip(f"no VBench environment at {ENV} (make vbench-env)", allow_module_level=True)

TINY = ["generator=wan", "generator.height=32", "generator.width=32", "generator.num_frames=9",
        f"generator.max_sequence_length={TEXT_LEN}", "generator.lora_rank=0", "generator.guidance_scale=5.0",
        "generator.gradient_checkpointing=false", "device=cpu", "num_steps=2", "batch_size=25", f"vbench.env={ENV}"]


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_components(str(tmp_path_factory.mktemp("tiny_wan") / "wan"), tiny_wan_components())


def flicker(path: Path) -> float:
    """VBench's temporal_flickering of one video, written out: (255 - mean_t mean|f_{t+1} - f_t|) / 255."""
    import imageio.v2 as imageio

    frames = np.stack([f.astype(np.float32) for f in imageio.get_reader(path)])  # [F, H, W, 3]
    return (255.0 - float(np.mean([np.abs(frames[t + 1] - frames[t]).mean() for t in range(len(frames) - 1)]))) / 255


@pytest.fixture(scope="module")
def standard_run(wan_dir, tmp_path_factory):
    """The whole temporal_flickering suite (75 prompts x 5 videos) plus three dimensions that cannot run."""
    tmp = tmp_path_factory.mktemp("vbench")
    cache = tmp / "cache"
    (cache / "amt_model").mkdir(parents=True)
    (cache / "amt_model" / "amt-s.pth").write_bytes(b"not a checkpoint")  # motion_smoothness: present but broken
    out = tmp / "out"
    argv = [*TINY, f"generator.path_or_id={wan_dir}", "metrics=[vbench]", f"out={out}", f"vbench.cache_dir={cache}",
            "vbench.dimensions=[temporal_flickering,scene,subject_consistency,motion_smoothness]"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(tmp / "hub"))  # an empty Hugging Face cache: scene's BERT is missing too
        assert main(argv) == 0
    return out, cache, argv


def test_records_hold_vbench_own_number(standard_run):
    out, _, _ = standard_run
    result_file = out / "results" / "temporal_flickering_eval_results.json"
    theirs = json.loads(result_file.read_text())["temporal_flickering"]
    summary = json.loads((out / "vbench_summary.json").read_text())
    rec = summary["dimensions"]["temporal_flickering"]
    assert rec["status"] == "ok" and rec["value"] == theirs[0] and rec["n"] == len(theirs[1]) == 375
    rows = [json.loads(x) for x in (out.parent / "summary.jsonl").read_text().splitlines()]
    by = {r["metric"]: r for r in rows}
    assert by["vbench_temporal_flickering"]["value"] == theirs[0]  # exactly VBench's number
    # our records are VBench's: and VBench's number is the flicker formula on the videos we wrote
    per_video = {Path(v["video_path"]).name: v["video_results"] for v in theirs[1]}
    some = sorted(per_video)[:5]
    assert [flicker(out / "videos" / n) for n in some] == pytest.approx([per_video[n] for n in some], abs=1e-9)
    assert theirs[0] == pytest.approx(np.mean(list(per_video.values())), abs=1e-12)
    # totals: only a partial Quality, saying what it covers; no Semantic / Total from nothing
    q = by["vbench_quality_partial"]
    assert q["covers"] == ["temporal flickering"] and "subject consistency" in q["missing"]
    assert q["value"] == pytest.approx((theirs[0] - 0.6293) / (1 - 0.6293), abs=1e-12)
    assert not any(m in by for m in ("vbench_quality", "vbench_total", "vbench_semantic", "vbench_total_partial"))


def test_missing_weights_are_named_and_a_broken_one_is_an_error(standard_run):
    out, cache, _ = standard_run
    dims = json.loads((out / "vbench_summary.json").read_text())["dimensions"]
    hub = out.parent / "hub"
    assert dims["scene"] == {"status": "missing", "wanted": [
        str(cache / "caption_model/tag2text_swin_14m.pth"), f"Hugging Face bert-base-uncased: vocab.txt (in {hub})",
        f"Hugging Face bert-base-uncased: model.safetensors or pytorch_model.bin (in {hub})"]}
    assert dims["subject_consistency"]["wanted"] == [str(cache / "dino_model/facebookresearch_dino_main/"),
                                                     str(cache / "dino_model/dino_vitbase16_pretrain.pth")]
    assert dims["motion_smoothness"]["status"] == "error" and dims["motion_smoothness"]["error"]


def test_vbench_loader_finds_every_video(standard_run):
    """VBench's own loader (vbench.utils.load_dimension_info on the info files VBench built from our folder)
    lists every generated video, five per prompt of each dimension it ran, and nothing else. The videos are
    those of the dimensions that could run (motion_smoothness had a weight file, temporal_flickering needs none);
    scene and subject_consistency, with weights missing, got none."""
    out, _, _ = standard_run
    videos = sorted(p.name for p in (out / "videos").iterdir())
    info = read_full_info(package_info_file(ENV))
    suite = standard_suite(info, ["temporal_flickering", "motion_smoothness"])
    assert videos == sorted(video_name(p.prompt, j) for p in suite for j in range(5))
    assert len(videos) == 5 * (75 + 72)
    assert not (out / "videos.partial").exists()
    code = ("import json, sys; from vbench.utils import load_dimension_info; "
            "v, p = load_dimension_info(sys.argv[1], sys.argv[2], 'en'); "
            "print(json.dumps({'videos': v, 'per_prompt': [len(x['video_list']) for x in p]}))")
    listed = []
    for dim, n_prompts in (("temporal_flickering", 75), ("motion_smoothness", 72)):
        res = subprocess.run([str(env_python(ENV)), "-c", code, str(out / "results" / f"{dim}_full_info.json"), dim],
                             capture_output=True, text=True, check=True, cwd="/")
        found = json.loads(res.stdout.strip().splitlines()[-1])
        assert found["per_prompt"] == [5] * n_prompts, dim
        listed += [Path(v).name for v in found["videos"]]
    assert sorted(listed) == videos


def test_rerun_generates_nothing_and_appends_the_same_score(standard_run, capsys):
    out, _, argv = standard_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    capsys.readouterr()
    assert main([a for a in argv if not a.startswith("vbench.dimensions")] + ["vbench.dimensions=[temporal_flickering]"]) == 0
    assert "rank 0: videos" not in capsys.readouterr().out  # no generation: the model was not even loaded
    assert {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()} == before
    rows = [json.loads(x) for x in (out.parent / "summary.jsonl").read_text().splitlines()]
    tf = [r["value"] for r in rows if r["metric"] == "vbench_temporal_flickering"]
    assert len(tf) == 2 and tf[0] == tf[1]


def test_custom_prompts_and_two_process_generation(wan_dir, tmp_path):
    """A prompt file (VBench's custom mode) generated by two processes under torch.distributed.run (the
    launcher path training uses) gives the same videos as one process."""
    import imageio.v2 as imageio

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball rolling\na cat on a mat\na countdown 3-2-1\n")
    common = [*[a for a in TINY if not a.startswith("batch_size")], f"generator.path_or_id={wan_dir}",
              "metrics=[vbench]", f"vbench.prompts={prompts}", "vbench.samples_per_prompt=2", "batch_size=1",
              f"vbench.cache_dir={tmp_path / 'cache'}", "vbench.dimensions=[temporal_flickering]"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "vipo.eval",
                          *common, f"out={tmp_path / 'two'}"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "rank 1: videos" in two.stdout
    assert main([*common, f"out={tmp_path / 'one'}"]) == 0
    names = sorted(p.name for p in (tmp_path / "one" / "videos").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two" / "videos").iterdir())
    assert len(names) == 6 and "a countdown 3-2-1-1.mp4" in names
    for n in names:
        a = np.stack([f for f in imageio.get_reader(tmp_path / "one" / "videos" / n)])  # [F, H, W, 3]
        b = np.stack([f for f in imageio.get_reader(tmp_path / "two" / "videos" / n)])  # (its len() is inf)
        assert np.array_equal(a, b), n
    one = json.loads((tmp_path / "one" / "vbench_summary.json").read_text())
    two = json.loads((tmp_path / "two" / "vbench_summary.json").read_text())
    assert one["mode"] == "custom_input" and one["dimensions"]["temporal_flickering"]["n"] == 6
    assert one["dimensions"]["temporal_flickering"]["value"] == two["dimensions"]["temporal_flickering"]["value"]
