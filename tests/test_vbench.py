"""VBench Quality / Semantic / Total against the published formula, written out by hand."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipo.eval.vbench import NORMALIZATION, QUALITY_DIMENSIONS, SEMANTIC_DIMENSIONS, vbench_totals

MADE_UP = {  # VBench's json key style (underscores), fractions
    "subject_consistency": 0.96, "background_consistency": 0.97, "temporal_flickering": 0.98,
    "motion_smoothness": 0.985, "dynamic_degree": 0.70, "aesthetic_quality": 0.62, "imaging_quality": 0.66,
    "object_class": 0.85, "multiple_objects": 0.70, "human_action": 0.95, "color": 0.88,
    "spatial_relationship": 0.75, "scene": 0.50, "appearance_style": 0.22, "temporal_style": 0.25,
    "overall_consistency": 0.27,
}


def test_made_up_scores_by_hand():
    quality = ((0.96 - 0.1462) / (1 - 0.1462) + (0.97 - 0.2615) / (1 - 0.2615) + (0.98 - 0.6293) / (1 - 0.6293)
               + (0.985 - 0.706) / (0.9975 - 0.706) + 0.5 * 0.70 + 0.62 + 0.66) / 6.5
    semantic = (0.85 + 0.70 + 0.95 + 0.88 + 0.75 + 0.50 / 0.8222 + (0.22 - 0.0009) / (0.2855 - 0.0009)
                + 0.25 / 0.364 + 0.27 / 0.364) / 9
    out = vbench_totals(MADE_UP)
    assert out["quality"] == pytest.approx(quality, abs=1e-12)
    assert out["semantic"] == pytest.approx(semantic, abs=1e-12)
    assert out["total"] == pytest.approx((4 * quality + semantic) / 5, abs=1e-12)
    assert out["total"] == pytest.approx(0.8243848, abs=1e-6)  # the same numbers, evaluated once


def test_extremes_map_to_zero_and_one():
    lo = vbench_totals({d: NORMALIZATION[d][0] for d in NORMALIZATION})
    hi = vbench_totals({d: NORMALIZATION[d][1] for d in NORMALIZATION})
    assert lo == pytest.approx({"quality": 0.0, "semantic": 0.0, "total": 0.0}, abs=1e-12)
    assert hi == pytest.approx({"quality": 1.0, "semantic": 1.0, "total": 1.0}, abs=1e-12)


def test_dynamic_degree_has_half_weight():
    base = {d: NORMALIZATION[d][1] for d in NORMALIZATION}
    dropped = dict(base, **{"dynamic degree": 0.0})
    assert vbench_totals(dropped)["quality"] == pytest.approx(1 - 0.5 / 6.5)
    dropped = dict(base, **{"imaging quality": 0.0})
    assert vbench_totals(dropped)["quality"] == pytest.approx(1 - 1 / 6.5)


def test_key_styles_and_errors():
    assert vbench_totals({k.replace("_", " ").title(): v for k, v in MADE_UP.items()}) == vbench_totals(MADE_UP)
    partial = dict(MADE_UP)
    del partial["scene"]
    with pytest.raises(KeyError, match="scene"):
        vbench_totals(partial)
    zero = vbench_totals(partial, missing="zero")
    assert zero["semantic"] == pytest.approx(vbench_totals(MADE_UP)["semantic"] - 0.50 / 0.8222 / 9)
    with pytest.raises(KeyError, match="not a dimension"):
        vbench_totals(dict(MADE_UP, **{"not a dimension": 0.5}))
    with pytest.raises(ValueError, match="percent"):
        vbench_totals({k: 100 * v for k, v in MADE_UP.items()})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=16, max_size=16))
def test_total_is_the_4_to_1_mix_and_monotone(values):
    scores = dict(zip(list(QUALITY_DIMENSIONS) + list(SEMANTIC_DIMENSIONS), values))
    out = vbench_totals(scores)
    assert out["total"] == pytest.approx((4 * out["quality"] + out["semantic"]) / 5, abs=1e-12)
    bumped = dict(scores, color=min(1.0, scores["color"] + 0.1))
    assert vbench_totals(bumped)["total"] >= out["total"] - 1e-12
