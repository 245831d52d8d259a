import math
import warnings

import numpy as np
import pytest

from pymtl.reporting import performance_profile, performance_ratios

# Four problems: two where higher is better (mIoU-like), two where lower is better (error-like).
VALUES = {
    "a": [0.5, 0.4, 2.0, 1.0],
    "b": [0.25, 0.5, 1.0, 1.0],
    "c": [0.4, math.nan, 4.0, 1.5],  # c failed on problem 1
}
HIGHER = [True, True, False, False]
# best per problem: 0.5 (a), 0.5 (b), 1.0 (b), 1.0 (a and b tie)
# ratios best/own (↑) or own/best (↓):
#   a: 0.5/0.5=1, 0.5/0.4=1.25, 2/1=2, 1/1=1
#   b: 0.5/0.25=2, 1, 1, 1
#   c: 0.5/0.4=1.25, failed=∞, 4/1=4, 1.5/1=1.5
RATIOS = {
    "a": [1.0, 1.25, 2.0, 1.0],
    "b": [2.0, 1.0, 1.0, 1.0],
    "c": [1.25, math.inf, 4.0, 1.5],
}
TAUS = [1.0, 1.25, 1.5, 2.0, 4.0, 10.0]
# fraction of the 4 problems with ratio ≤ τ:
PROFILE = {
    "a": [2 / 4, 3 / 4, 3 / 4, 4 / 4, 4 / 4, 4 / 4],
    "b": [3 / 4, 3 / 4, 3 / 4, 4 / 4, 4 / 4, 4 / 4],
    "c": [0 / 4, 1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4],
}


def test_ratios_hand_computed():
    ratios = performance_ratios(VALUES, HIGHER)
    assert list(ratios) == ["a", "b", "c"]
    for method, expected in RATIOS.items():
        assert ratios[method].tolist() == expected


def test_profile_hand_computed():
    profile = performance_profile(VALUES, HIGHER, TAUS)
    for method, expected in PROFILE.items():
        assert profile[method].tolist() == expected


def test_one_direction_for_all_problems():
    values = {"x": [1.0, 4.0], "y": [2.0, 2.0]}
    assert performance_ratios(values, False)["x"].tolist() == [1.0, 2.0]
    assert performance_ratios(values, False)["y"].tolist() == [2.0, 1.0]
    assert performance_ratios(values, True)["x"].tolist() == [2.0, 1.0]


def test_zero_best_value():
    # lower is better and a method reaches 0: it and its ties get 1, the others ∞
    ratios = performance_ratios({"x": [0.0], "y": [0.0], "z": [1.0]}, False)
    assert [ratios[m][0] for m in "xyz"] == [1.0, 1.0, math.inf]
    # higher is better: a 0 against a positive best is ∞; all 0 ties at 1
    ratios = performance_ratios({"x": [0.0, 0.0], "y": [1.0, 0.0]}, True)
    assert ratios["x"].tolist() == [math.inf, 1.0]
    assert ratios["y"].tolist() == [1.0, 1.0]


def test_problem_every_method_failed_gives_infinity_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ratios = performance_ratios({"x": [math.nan, 1.0], "y": [math.inf, 2.0]}, True)
    assert ratios["x"].tolist() == [math.inf, 2.0]
    assert ratios["y"].tolist() == [math.inf, 1.0]


def test_single_method_is_always_best():
    profile = performance_profile({"only": [3.0, 0.1]}, [True, False], [1.0])
    assert profile["only"].tolist() == [1.0]


def test_profile_is_monotone_and_ends_at_the_solved_fraction():
    rng = np.random.default_rng(0)
    values = {m: rng.uniform(0.1, 1.0, size=20).tolist() for m in "pqr"}
    values["q"][3] = math.nan
    taus = np.linspace(1.0, 100.0, 50)
    for method, curve in performance_profile(values, True, taus).items():
        assert np.all(np.diff(curve) >= 0)
        assert curve[-1] == (19 / 20 if method == "q" else 1.0)


@pytest.mark.parametrize(
    ("values", "higher", "taus", "message"),
    [
        ({}, True, [1.0], "no methods given"),
        ({"x": [1.0], "y": [1.0, 2.0]}, True, [1.0], r"problem counts \{'x': 1, 'y': 2\}"),
        ({"x": []}, True, [1.0], "problem counts"),
        ({"x": [1.0, 2.0]}, [True], [1.0], "one bool or one per problem"),
        ({"x": [1.0], "y": [-0.5]}, True, [1.0], r"got -0\.5 for method 'y' on problem 0"),
        ({"x": [1.0]}, True, [0.5, 1.0], "taus must be .* >= 1"),
        ({"x": [1.0]}, True, [1.0, math.nan], "taus must be"),
    ],
)
def test_invalid_input(values, higher, taus, message):
    with pytest.raises(ValueError, match=message):
        performance_profile(values, higher, taus)
