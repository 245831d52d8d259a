"""Higher-Order Approximation (SPEC-methods §4.3): predictions from the pair networks."""

from __future__ import annotations

import pytest

from pymtl.taskgroups import CandidateSet, SelectionError, hoa_candidates, select


def test_prediction_is_the_mean_of_the_pairs(standley):
    hoa = hoa_candidates(standley, "val")
    assert hoa.splits == ("val",)
    assert len(hoa.candidates) == 36
    sdn = hoa.find("sdn", 1.0)
    assert sdn is not None
    assert sdn.info["hoa"] is True
    # s: mean of sd and sn; d: of sd and dn; n: of sn and dn (Appendix A val losses)
    expected = ((0.07858 + 0.074) / 2, (0.1833 + 0.1695) / 2, (0.0997 + 0.09275) / 2)
    assert sdn.losses["val"] == pytest.approx(expected, rel=0, abs=1e-15)
    sd = hoa.find("sd", 1.0)
    assert sd is not None
    assert sd.losses["val"] == (0.07858, 0.1833)
    assert hoa.find("s", 0.5).losses["val"] == (0.08021,)


def _pairs_only() -> CandidateSet:
    tasks = ["a", "b", "c"]
    entries = [{"tasks": [t], "width": 0.5, "loss": {"val": [0.5]}} for t in tasks]
    entries += [
        {"tasks": ["a", "b"], "loss": {"val": [0.2, 0.3]}},
        {"tasks": ["a", "c"], "loss": {"val": [0.4, 0.1]}},
        {"tasks": ["b", "c"], "loss": {"val": [0.2, 0.3]}},
    ]
    return CandidateSet.from_entries(tasks, ["val"], entries)


def test_missing_higher_order_networks_are_added():
    hoa = hoa_candidates(_pairs_only(), "val")
    abc = hoa.find("abc", 1.0)
    assert abc is not None
    assert abc.name == "a+b+c"
    assert abc.cost == 1.0
    assert abc.losses["val"] == pytest.approx((0.3, 0.25, 0.2))
    (one,) = select(_pairs_only(), [1.0], split="val", hoa=True)
    assert [n.name for n in one.networks] == ["a+b+c"]
    assert one.method == "hoa"


def test_missing_pairs_are_an_error():
    cs = CandidateSet.from_entries(
        ["a", "b", "c"],
        ["val"],
        [
            {"tasks": ["a", "b"], "loss": {"val": [0.2, 0.3]}},
            {"tasks": ["a", "b", "c"], "loss": {"val": [0.2, 0.3, 0.4]}},
        ],
    )
    with pytest.raises(SelectionError, match="HOA cannot predict network 'a\\+b\\+c'"):
        hoa_candidates(cs, "val")
