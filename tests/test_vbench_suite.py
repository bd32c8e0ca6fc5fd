"""VBench's prompt suite, names, weights table and records; totals against VBench's own cal_final_score.

No VBench environment needed (the end-to-end run of the real package is tests/test_vbench_e2e.py, slow).
The numbers in tests/fixtures/vbench/cal_final_score.json were printed by VBench's scripts/cal_final_score.py
on the result files beside them (checks/make_vbench_fixture.py).
"""

import inspect
import json
import os
from pathlib import Path

import pytest

from vipo.eval.vbench import (NORMALIZATION, read_vbench_results, vbench_totals, vbench_totals_covering)
from vipo.eval.vbench_suite import (DIMENSIONS, STANDARD_ONLY, WEIGHT_FILES, SuiteError, check_dimensions,
                                    custom_suite, missing_weights, prompt_of, read_full_info, standard_suite,
                                    video_name)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "vbench"
MINI_INFO = [  # VBench_full_info.json's format: the first entries of the real file, plus a repeated prompt
    {"prompt_en": "In a still frame, a stop sign", "dimension": ["temporal_flickering"]},
    {"prompt_en": "a person swimming in ocean", "dimension": ["subject_consistency", "dynamic_degree",
                                                              "motion_smoothness"]},
    {"prompt_en": "a bicycle", "dimension": ["object_class"], "auxiliary_info": {"object_class": {"object": "bicycle"}}},
    {"prompt_en": "a person swimming in ocean", "dimension": ["human_action"]},
    {"prompt_en": "A beautiful coastal beach in spring, waves lapping on sand, Van Gogh style",
     "dimension": ["appearance_style"], "auxiliary_info": {"appearance_style": {"appearance_style": "Van Gogh style"}}},
]


# ------------------------------------------------------------------------------------------ names
def test_dimension_names():
    assert len(DIMENSIONS) == 16 and set(DIMENSIONS) == set(WEIGHT_FILES)
    assert {d.replace("_", " ") for d in DIMENSIONS} == set(NORMALIZATION)
    assert check_dimensions(None) == list(DIMENSIONS)
    assert check_dimensions(["Temporal Flickering", "scene"]) == ["temporal_flickering", "scene"]
    with pytest.raises(SuiteError, match="did you mean 'temporal_flickering'"):
        check_dimensions(["temporal_flicker"])
    with pytest.raises(SuiteError, match="listed twice"):
        check_dimensions(["scene", "scene"])
    with pytest.raises(SuiteError, match="empty"):
        check_dimensions([])


@pytest.mark.parametrize("prompt", ["a dog", "a countdown 3-2-1", "abc-12", "Mr. Smith walks.", "A, b; c!"])
def test_video_name_reads_back_as_vbench_does(prompt):
    for j in range(5):
        name = video_name(prompt, j)
        assert name == f"{prompt}-{j}.mp4"
        assert prompt_of(name) == prompt  # vbench.utils.get_prompt_from_filename


def test_standard_suite_from_vbench_info():
    suite = standard_suite(MINI_INFO, ["temporal_flickering", "human_action", "subject_consistency"])
    assert [p.prompt for p in suite] == ["In a still frame, a stop sign", "a person swimming in ocean"]
    assert suite[1].dimensions == ("human_action", "subject_consistency")  # both entries, in the requested order
    assert [p.prompt for p in standard_suite(MINI_INFO, ["object_class"])] == ["a bicycle"]
    assert len(standard_suite(MINI_INFO, None)) == 4  # the repeated prompt once


def test_read_full_info_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make vbench-env"):
        read_full_info(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(SuiteError, match="entry 0"):
        read_full_info(bad)
    good = tmp_path / "VBench_full_info.json"
    good.write_text(json.dumps(MINI_INFO))
    assert read_full_info(good) == MINI_INFO


def test_custom_suite(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("a red ball\n\n  a cat on a mat  \n")
    suite = custom_suite(f, ["temporal_flickering", "subject_consistency"])
    assert [(p.prompt, p.dimensions) for p in suite] == [
        ("a red ball", ("temporal_flickering", "subject_consistency")),
        ("a cat on a mat", ("temporal_flickering", "subject_consistency"))]
    with pytest.raises(SuiteError, match="need VBench's own prompts"):
        custom_suite(f, ["color"])
    assert set(STANDARD_ONLY) == {"object_class", "multiple_objects", "scene", "appearance_style", "color",
                                  "spatial_relationship"}
    f.write_text("a red ball\nan up/down arrow\n")
    with pytest.raises(SuiteError, match=r"prompts.txt:2: .*'/'"):
        custom_suite(f, ["temporal_flickering"])
    f.write_text("a\nb\na\n")
    with pytest.raises(SuiteError, match=r"prompts.txt:3: .*repeats line 1"):
        custom_suite(f, ["temporal_flickering"])
    f.write_text("x" * 260 + "\n")
    with pytest.raises(SuiteError, match="too long"):
        custom_suite(f, ["temporal_flickering"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        custom_suite(tmp_path / "none.txt", ["temporal_flickering"])


def test_missing_weights_names_each_file(tmp_path):
    dims = ["temporal_flickering", "background_consistency", "subject_consistency", "aesthetic_quality"]
    assert missing_weights(["temporal_flickering"], tmp_path) == {}  # needs no weights
    missing = missing_weights(dims, tmp_path)
    assert missing == {
        "background_consistency": [str(tmp_path / "clip_model/ViT-B-32.pt")],
        "subject_consistency": [str(tmp_path / "dino_model/facebookresearch_dino_main/"),
                                str(tmp_path / "dino_model/dino_vitbase16_pretrain.pth")],
        "aesthetic_quality": [str(tmp_path / "clip_model/ViT-L-14.pt"),
                              str(tmp_path / "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth")]}
    (tmp_path / "clip_model").mkdir()
    (tmp_path / "clip_model/ViT-B-32.pt").write_bytes(b"x")
    (tmp_path / "dino_model/facebookresearch_dino_main").mkdir(parents=True)
    missing = missing_weights(dims, tmp_path)
    assert "background_consistency" not in missing
    assert missing["subject_consistency"] == [str(tmp_path / "dino_model/dino_vitbase16_pretrain.pth")]


def test_models_loaded_by_name_are_looked_up_in_the_hub_cache(tmp_path):
    """scene (Tag2Text) loads BERT's tokenizer and weights, GRiT's dimensions its tokenizer, by the name
    bert-base-uncased: absent from the Hugging Face cache, the dimension is missing with the file named."""
    cache, hub = tmp_path / "vbench", tmp_path / "hub"
    for rel in ("caption_model/tag2text_swin_14m.pth", "grit_model/grit_b_densecap_objectdet.pth"):
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_bytes(b"x")
    missing = missing_weights(["scene", "color"], cache, hub)
    assert missing == {"scene": [f"Hugging Face bert-base-uncased: vocab.txt (in {hub})",
                                 f"Hugging Face bert-base-uncased: model.safetensors or pytorch_model.bin (in {hub})"],
                       "color": [f"Hugging Face bert-base-uncased: vocab.txt (in {hub})"]}
    commit = "86b5e0934494bd15c9632b12f734a8a67f723594"
    snap = hub / "models--bert-base-uncased/snapshots" / commit
    snap.mkdir(parents=True)
    (hub / "models--bert-base-uncased/refs").mkdir()
    (hub / "models--bert-base-uncased/refs/main").write_text(commit)  # the revision an offline load resolves
    (snap / "vocab.txt").write_text("[PAD]\n")
    assert missing_weights(["scene", "color"], cache, hub) == {
        "scene": [f"Hugging Face bert-base-uncased: model.safetensors or pytorch_model.bin (in {hub})"]}
    (snap / "pytorch_model.bin").write_bytes(b"x")
    assert missing_weights(["scene", "color"], cache, hub) == {}


# ----------------------------------------------------------------------------------------- totals
def fixture_scores(tag: str) -> dict:
    return {d: r["score"] for d, r in read_vbench_results(FIXTURE / tag).items()}


def test_totals_equal_vbench_cal_final_score():
    """Our formula on 16 result files = the numbers VBench's scripts/cal_final_score.py printed for them."""
    ref = json.loads((FIXTURE / "cal_final_score.json").read_text())
    scores = fixture_scores("full")
    assert len(scores) == 16
    ours = vbench_totals(scores)
    for k in ("quality", "semantic", "total"):
        assert ours[k] == pytest.approx(ref["full"][k], abs=1e-12), k
    covering = vbench_totals_covering(scores)
    assert all(covering[k]["complete"] and covering[k]["value"] == ours[k] and not covering[k]["missing"]
               for k in ours)
    assert len(covering["total"]["covers"]) == 16


def test_zero_fill_equals_cal_final_score_and_is_off_by_default():
    ref = json.loads((FIXTURE / "cal_final_score.json").read_text())
    scores = fixture_scores("partial")
    assert sorted(d.replace(" ", "_") for d in NORMALIZATION if d not in scores) == sorted(ref["partial_missing"])
    filled = vbench_totals_covering(scores, zero_fill=True)
    for k in ("quality", "semantic", "total"):
        assert filled[k]["value"] == pytest.approx(ref["partial"][k], abs=1e-12), k
        assert not filled[k]["complete"]
    assert filled["quality"]["zero_filled"] == ["dynamic degree"] and filled["semantic"]["zero_filled"] == ["scene"]
    default = vbench_totals_covering(scores)
    assert default["quality"]["zero_filled"] == [] and default["quality"]["missing"] == ["dynamic degree"]
    # partial: the weighted mean over the dimensions present (dynamic degree's weight 0.5 leaves the denominator)
    full = vbench_totals_covering(fixture_scores("full"))
    assert default["quality"]["value"] != pytest.approx(full["quality"]["value"])
    norm = {d: (scores[d] - lo) / (hi - lo) for d, (lo, hi) in NORMALIZATION.items() if d in scores}
    q = [d for d in default["quality"]["covers"]]
    assert default["quality"]["value"] == pytest.approx(sum(norm[d] for d in q) / 6.0, abs=1e-12)
    s = default["semantic"]["covers"]
    assert len(s) == 8 and default["semantic"]["value"] == pytest.approx(sum(norm[d] for d in s) / 8, abs=1e-12)
    assert default["total"]["value"] == pytest.approx((4 * default["quality"]["value"]
                                                       + default["semantic"]["value"]) / 5, abs=1e-12)


def test_one_dimension_gives_a_partial_quality_and_no_total():
    out = vbench_totals_covering({"temporal_flickering": 0.95})
    assert out["quality"]["value"] == pytest.approx((0.95 - 0.6293) / (1 - 0.6293), abs=1e-12)
    assert out["quality"]["covers"] == ["temporal flickering"] and not out["quality"]["complete"]
    assert out["semantic"]["value"] is None and out["total"]["value"] is None


# ---------------------------------------------------------------------------------------- records
def test_records_from_runner_report(tmp_path):
    from vipo.eval.vbench_eval import records, total_metric

    f = tmp_path / "temporal_flickering_eval_results.json"
    f.write_text(json.dumps({"temporal_flickering": [0.97, [{"video_path": "a-0.mp4", "video_results": 0.97}]]}))
    report = {"temporal_flickering": {"status": "ok", "file": str(f), "seconds": 1.0},
              "scene": {"status": "missing", "wanted": ["/cache/caption_model/tag2text_swin_14m.pth"]},
              "color": {"status": "error", "error": "RuntimeError: boom"}}
    dims, totals = records(report, zero_fill=False)
    assert dims["temporal_flickering"] == {"status": "ok", "value": 0.97, "n": 1, "file": str(f), "seconds": 1.0}
    assert dims["scene"]["wanted"] == ["/cache/caption_model/tag2text_swin_14m.pth"]
    assert dims["color"]["status"] == "error"
    assert total_metric("quality", totals["quality"]) == "vbench_quality_partial"
    assert totals["total"]["value"] is None
    dims, totals = records(report, zero_fill=True)
    assert total_metric("total", totals["total"]) == "vbench_total"
    assert totals["total"]["zero_filled"] == [d for d in NORMALIZATION if d != "temporal flickering"]


def test_eval_records_reach_the_results_table(tmp_path):
    from vipo.results import collect

    run = tmp_path / "runs" / "r1"
    (run / "eval").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"run_id": "r1", "eval/videoalign_vq": 3.5}))
    rows = [{"metric": "vbench_total", "value": 0.80}, {"metric": "vbench_total", "value": 0.81},
            {"metric": "videoalign_vq", "value": 1.0}, {"metric": "vbench_scene", "value": None}]
    (run / "eval" / "summary.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\nnot json\n")
    with pytest.warns(UserWarning, match=r"summary.jsonl:5 is not an evaluation record"):
        df = collect(tmp_path / "runs", cache=False)
    row = df.iloc[0]
    assert row["eval/vbench_total"] == 0.81  # the latest record
    assert row["eval/videoalign_vq"] == 3.5  # the run's own summary wins
    assert "eval/vbench_scene" not in df.columns
    (run / "eval" / "summary.jsonl").write_text(json.dumps({"metric": "vbench_total", "value": 0.5}) + "\n")
    assert collect(tmp_path / "runs")["eval/vbench_total"].iloc[0] == 0.5  # builds the cache
    with open(run / "eval" / "summary.jsonl", "a") as f:
        f.write(json.dumps({"metric": "vbench_total", "value": 0.6}) + "\n")
    os.utime(run / "eval" / "summary.jsonl", (2e9, 2e9))  # newer than the cache
    assert collect(tmp_path / "runs")["eval/vbench_total"].iloc[0] == 0.6  # a new record rebuilds it


# ------------------------------------------------------------------------------- preset and options
def test_wan_preset_composes_with_the_experiment_generator():
    from vipo.eval.run import experiment_generator
    from vipo.eval.vbench_eval import PRESET_DIR, load_preset, resolve_preset, parse_options
    from vipo.generators.wan import WanGenerator

    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert "wan_videoalign" in presets
    params = inspect.signature(WanGenerator).parameters  # the options the config validator reads
    for name in presets:
        preset = load_preset(name)
        gen = experiment_generator(name)  # every preset is named after an experiment
        assert gen["name"] == "wan" and set(preset["generator"]) <= set(params)
    p = load_preset("wan_videoalign")
    assert (p["generator"]["height"], p["generator"]["width"], p["generator"]["num_frames"]) == (720, 1280, 81)
    assert p["num_steps"] == 50 and p["samples_per_prompt"] == 5 and p["fps"] == 16
    assert p["generator"]["negative_prompt"].startswith("色调艳丽")
    # Wan2.2-T2V-A14B's own inference defaults (wan/configs/wan_t2v_A14B.py, shared_config.py, generate.py)
    q = load_preset("wan22_videoalign")
    g = q["generator"]
    assert (g["height"], g["width"], g["num_frames"], g["shift"]) == (720, 1280, 81, 12.0)
    assert (g["guidance_scale"], g["guidance_scale_2"]) == (4.0, 3.0)  # high-noise, low-noise expert
    assert q["num_steps"] == 40 and q["fps"] == 16 and g["negative_prompt"] == p["generator"]["negative_prompt"]
    assert resolve_preset(parse_options({}), "wan22_videoalign")[0] == "wan22_videoalign"
    assert resolve_preset(parse_options({}), "wan_videoalign")[0] == "wan_videoalign"
    assert resolve_preset(parse_options({}), "toy_redness") == (None, {})
    assert resolve_preset(parse_options({"preset": "none"}), "wan_videoalign") == (None, {})


def test_apply_generator_settings_sets_attributes_and_checks_them():
    from vipo.config import ConfigError
    from vipo.eval.vbench_eval import apply_generator_settings

    class Gen:
        is_video, t_scale, num_frames, height = True, 4, 9, 64

    g = Gen()
    assert apply_generator_settings(g, {"num_frames": 13, "height": 32}) == {"num_frames": 13, "height": 32}
    assert (g.num_frames, g.height) == (13, 32)
    with pytest.raises(ConfigError, match="generator.shiftt"):
        apply_generator_settings(g, {"shiftt": 3.0})
    with pytest.raises(ConfigError, match="4k \\+ 1"):
        apply_generator_settings(g, {"num_frames": 10})


def test_cli_options_and_errors(tmp_path, capsys):
    from vipo.eval.__main__ import main
    from vipo.eval.run import parse_args
    from vipo.eval.vbench_eval import parse_options

    args = parse_args(["checkpoint=/some/run", "metrics=[vbench]", "vbench.dimensions=temporal_flickering",
                       "vbench.samples_per_prompt=2"])
    assert args.run == "/some/run" and args.vbench == {"dimensions": "temporal_flickering", "samples_per_prompt": 2}
    opts = parse_options(args.vbench)
    assert opts.dimensions == ["temporal_flickering"] and opts.samples_per_prompt == 2 and not opts.zero_fill
    assert parse_args(["experiment=wan_videoalign", "metrics=[vbench]"]).generator["name"] == "wan"
    with pytest.raises(Exception, match="did you mean 'dimensions'"):
        parse_options({"dimension": "scene"})
    info = tmp_path / "VBench_full_info.json"
    info.write_text(json.dumps(MINI_INFO))
    (tmp_path / "fakeenv" / "bin").mkdir(parents=True)
    (tmp_path / "fakeenv" / "bin" / "python").write_text("")  # never run: the toy generator is refused first
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n")
    cases = [
        (["generator=toy", "metrics=[reward]", "vbench.prompts=x"], "metrics does not list vbench"),
        (["generator=toy", "metrics=[vbench,hps]"], "evaluate ['hps'] in a separate call"),
        (["generator=toy", "metrics=[vbench]", "vbench.dimensions=[flicker]"], "unknown VBench dimension"),
        (["generator=toy", "metrics=[vbench]", f"vbench.info_file={info}", f"vbench.env={tmp_path / 'noenv'}"],
         "make vbench-env"),
        (["experiment=no_such", "metrics=[vbench]"], "unknown experiment 'no_such'"),
        (["generator=toy", "metrics=[vbench]", "vbench.prompts=standard", f"vbench.env={tmp_path / 'noenv'}"],
         "VBench environment"),
        (["generator=toy", "metrics=[vbench]", f"vbench.prompts={prompts}", f"vbench.env={tmp_path / 'fakeenv'}",
          "vbench.dimensions=[temporal_flickering]", f"out={tmp_path / 'out'}", "device=cpu"],
         "ToyGenerator generates images"),
    ]
    for argv, needle in cases:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, (argv, err)
