"""TOST, Holm and the seed counts of analysis.power against hand computations and published values."""

import math

import pytest

from analysis.power import half_width, paired_power, seeds_for_half_width, seeds_for_power
from analysis.stats import confirmatory_verdict, holm, holm_levels, t_interval_at, tost


def _t3_sf(t: float) -> float:
    """Survival function of Student's t with 3 degrees of freedom, closed form:
    F(t) = 1/2 + (1/pi) * (t / (sqrt(3) (1 + t^2 / 3)) + atan(t / sqrt(3)))."""
    return 0.5 - (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi


def test_tost_matches_the_hand_computation():
    # differences 0.01, 0.03, -0.01, 0.05: mean 0.02, squared deviations sum 0.002, s^2 = 0.002 / 3, se = s / 2
    se = math.sqrt(0.002 / 3) / 2
    r = tost([0.01, 0.03, -0.01, 0.05], margin=0.05)
    assert r.mean == pytest.approx(0.02) and r.se == pytest.approx(se) and r.n == 4
    assert r.p_diff == pytest.approx(2 * _t3_sf(0.02 / se), rel=1e-9)  # t = 1.549, p = 0.219
    p_upper = _t3_sf((0.05 - 0.02) / se)  # H0 mean >= +0.05: t = 2.324
    p_lower = _t3_sf((0.02 + 0.05) / se)  # H0 mean <= -0.05: t = 5.422
    assert r.p_equiv == pytest.approx(max(p_upper, p_lower), rel=1e-9)
    assert r.p_equiv == pytest.approx(0.05136, abs=1e-5)  # just above 0.05: not equivalent at alpha 0.05
    # TOST at alpha <=> the 1 - 2 alpha interval inside the margin: the 90% interval's upper end is just above 0.05
    lo, hi = t_interval_at(r.mean, r.se, r.n, 0.90)
    assert lo > -0.05 and hi == pytest.approx(0.02 + 2.353363 * se, abs=1e-5) and hi > 0.05
    assert tost([0.01, 0.03, -0.01, 0.05], margin=0.06).p_equiv < 0.05  # a wider margin is met
    assert math.isnan(tost([0.1]).p_diff) and math.isnan(tost([0.1, 0.1], 0.05).p_equiv)  # nothing to conclude
    with pytest.raises(ValueError, match="margin must be > 0"):
        tost([0.1, 0.2], margin=0)


def test_holm_adjusted_p_and_levels_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # steps at 0.05/4, 0.05/3, 0.05/2: rejects 0.005 and 0.01, stops at 0.03 > 0.025; the rest inherit 0.025
    assert holm_levels(p, 0.05) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    # a nan (no test) does not count in m
    adj = holm([0.02, math.nan, 0.5])
    assert adj[0] == pytest.approx(0.04) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.5)
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6]) and holm([0.6, 0.7, 0.9]) == pytest.approx([1.0, 1.0, 1.0])


def test_confirmatory_verdicts():
    assert confirmatory_verdict(0.01, 0.9, +0.1, +1, 0.05) == "holds"
    assert confirmatory_verdict(0.01, 0.9, -0.1, +1, 0.05) == "fails"
    assert confirmatory_verdict(0.01, 0.9, -0.1, -1, 0.05) == "holds"  # lower is better (e.g. FD)
    assert confirmatory_verdict(0.2, 0.01, 0.0, +1, 0.05) == "equivalent"
    assert confirmatory_verdict(0.2, 0.2, 0.0, +1, 0.05) == "undecided"
    assert confirmatory_verdict(math.nan, math.nan, 0.1, +1, 0.05) == "undecided"


def test_power_matches_published_values():
    # G*Power 3.1, "Means: difference from constant (one sample / matched pairs)", two tails, alpha 0.05,
    # power 0.8: effect size d = 0.5 -> total n 34, actual power 0.8077775; d = 1 -> n 10, actual power 0.8030969
    assert seeds_for_power(0.5, 1.0, 0.8, 0.05) == 34
    assert paired_power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    assert paired_power(0.5, 1.0, 33) < 0.8
    assert seeds_for_power(0.05, 0.05) == 10 and paired_power(1.0, 1.0, 10) == pytest.approx(0.8030969, abs=1e-6)
    # large n: the normal approximation Phi(d sqrt(n) - z_{0.975})
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    assert paired_power(0.1, 1.0, 2000) == pytest.approx(phi(0.1 * math.sqrt(2000) - 1.959964), abs=2e-3)
    assert paired_power(0.0, 1.0, 20) == pytest.approx(0.05)  # no effect: the size of the test


def test_seeds_for_a_half_width_at_a_known_sd():
    # SD 0.05, half-width 0.03: t_{0.975, 12} = 2.1788 -> 2.1788 * 0.05 / sqrt(13) = 0.0302 > 0.03,
    # t_{0.975, 13} = 2.1604 -> 2.1604 * 0.05 / sqrt(14) = 0.0289 <= 0.03: 14 seeds
    assert half_width(0.05, 13) == pytest.approx(2.178813 * 0.05 / math.sqrt(13), rel=1e-6)
    assert half_width(0.05, 14) == pytest.approx(2.160369 * 0.05 / math.sqrt(14), rel=1e-6)
    assert seeds_for_half_width(0.05, 0.03) == 14
    assert seeds_for_half_width(0.034, 0.03) == 8  # the random-map pair's SD in the pilot
    with pytest.raises(ValueError, match="half-width must be > 0"):
        seeds_for_half_width(0.05, 0)


def test_power_table_reads_the_pilot_effects_the_claims_use():
    """The per-seed effects behind ``analysis.power`` average to the committed claim's effect (toy study)."""
    from analysis.power import power_table

    t = power_table("toy", family=4)
    row = t[(t["pair"] == "vipo vs grpo") & (t["reward"] == "redness")].iloc[0]
    assert row["n"] == 4 and row["levels"] == "0.11, 0.21, 0.31"
    assert row["mean"] == pytest.approx(-0.042, abs=5e-4)  # results/toy_study/tables/claims.md
    assert row["sd"] == pytest.approx(0.049, abs=5e-4)
    assert row["seeds_half_width"] == seeds_for_half_width(row["sd"], 0.03, 0.05 / 4)


def test_power_table_reports_a_count_beyond_the_search_instead_of_failing():
    """A metric on another scale (FD, SD ~3) against a half-width meant for accuracies (0.03) needs > N_MAX seeds:
    the table says so on that row and still sizes the other rows (the confirmatory study's exploratory claims)."""
    from analysis.power import N_MAX, power_markdown, power_table, seeds_for_half_width

    t = power_table("toy_confirm", family=4)
    fd = t[t["metric"] == "eval/fd"].iloc[0]
    assert fd["sd"] > 1 and fd["seeds_half_width"] == float("inf")
    shape = t[(t["metric"] == "eval/shape_acc") & (t["pair"] == "oracle vs vipo")].iloc[0]
    assert shape["n"] == 16 and shape["seeds_half_width"] == seeds_for_half_width(shape["sd"], 0.03, 0.05 / 4)
    assert f"> {N_MAX}" in power_markdown(t, 0.03, 0.05, 0.8, 0.05, 4)
