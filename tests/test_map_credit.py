"""Where the toy world's map sources put their credit, against the renderer's masks."""

import pytest
import torch

from vipo.toy.map_credit import credit_on_object, credit_table


def test_credit_on_object_hand_computed():
    masks = torch.zeros(1, 2, 2)
    masks[0, 0, 0] = 1  # one object pixel of four
    maps = torch.tensor([[[0.6, 0.2], [0.2, 0.0]]])
    r = credit_on_object(maps, masks)
    assert r["inside"] == pytest.approx(0.6) and r["outside"] == pytest.approx(0.4 / 3)
    assert r["share"] == pytest.approx(0.6) and r["area"] == pytest.approx(0.25)
    assert r["iou"] == pytest.approx(1.0)  # only the object pixel is above 0.5
    flat = credit_on_object(torch.ones(1, 2, 2), masks)
    assert flat["share"] == pytest.approx(0.25) and flat["inside"] == flat["outside"] == 1.0


def test_map_sources_order_by_credit_on_the_object():
    t = credit_table(n=128)
    area = t["ones"]["area"]
    assert t["ones"]["share"] == pytest.approx(area, rel=0.05)  # a flat map: its share is the area (per image)
    assert abs(t["random"]["share"] - area) < 0.03  # noise: about the area
    assert t["oracle"]["share"] > 0.75 and t["oracle_inverse"]["share"] < 0.05
    # ViPO's PCA map (source=backbone) leans on the object, less sharply than the oracle mask
    assert 2 * area < t["backbone"]["share"] < t["oracle"]["share"]
    assert t["backbone"]["inside"] > 5 * t["backbone"]["outside"]


def test_bad_input_gets_one_line(capsys):
    from vipo.toy.map_credit import main

    with pytest.raises(SystemExit) as e:
        main(["--n", "0"])
    assert e.value.code == 2 and "--n must be >= 1, got 0" in capsys.readouterr().err
    assert main(["--n", "4", "psm.kk=3"]) == 2
    assert "unknown key 'psm.kk'; did you mean 'k'?" in capsys.readouterr().err
