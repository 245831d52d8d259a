import json
import math

import pytest

from pymtl.reporting import compare_runs, comparison_to_json, format_table


def _cells(table: str) -> list[list[str]]:
    """Header and body rows cut at the column spans that the dashed rule line gives."""
    lines = table.splitlines()
    rule_at = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans, start = [], 0
    for part in lines[rule_at].split("  "):
        spans.append((start, start + len(part)))
        start += len(part) + 2
    body = lines[rule_at + 1 :]
    rows = [lines[rule_at - 1], *body[: body.index("")]]
    return [[row[a:b].strip() for a, b in spans] for row in rows]


def test_table_numbers_hand_computed(scenario):
    cells = _cells(format_table(compare_runs(scenario)))
    assert cells[0] == [
        "method",
        "seeds",
        "semseg miou (↑)",
        "depth rmse (↓)",
        "Δ_MTL per-task % (↑)",
        "Δ_MTL per-metric % (↓)",
        "Δ_MTL task-then-metric % (↑)",
    ]
    # mtan: miou 0.48 ± 0.0283, rmse 0.9 ± 0.141, Δ 4 ± 1.41 / −4 ± 1.41 / 1.5 ± 0.71 — all best
    assert cells[1] == [
        "mtan+ew",
        "2",
        "0.4800 ± 0.0283 *",
        "0.900 ± 0.141 *",
        "+4.00 ± 1.41 *",
        "-4.00 ± 1.41 *",
        "+1.50 ± 0.71 *",
    ]
    # hps: miou 0.42 ± 0.02, rmse 1.0 ± 0.1, Δ 7/3 ± √(7/3) = 2.33 ± 1.53, −2.33, 0.5 ± 0
    assert cells[2] == [
        "hps+ew",
        "3",
        "0.4200 ± 0.0200",
        "1.000 ± 0.100",
        "+2.33 ± 1.53",
        "-2.33 ± 1.53",
        "+0.50 ± 0.00",
    ]
    assert len(cells) == 3


def test_table_header_and_notes(scenario):
    text = format_table(compare_runs(scenario))
    lines = text.splitlines()
    assert lines[0] == "5 run(s), 2 method(s) on dataset 'synthetic', split 'val'"
    assert lines[1] == "tasks (primary metric): semseg: miou (↑), depth: rmse (↓)"
    assert lines[2] == "seeds run by every method: 0, 1"
    assert lines[-1] == (
        "note: hps+ew: seed(s) 2 not run by every method (left out of the performance profile)"
    )


def test_one_seed_missing_delta_and_partial_delta(fab):
    runs = [
        fab.run("a0", seed=0, delta=fab.delta(2.0, 1.0, 3.0)),
        fab.run("a1", seed=1, delta=None),
        fab.run("b0", seed=0, method=("mtan", "ew", None)),
    ]
    cells = _cells(format_table(compare_runs(runs)))
    hps, mtan = cells[1], cells[2]
    assert hps[4:] == ["+2.00 ± nan (1/2) *", "+1.00 ± nan (1/2) *", "+3.00 ± nan (1/2) *"]
    assert mtan[4:] == ["—", "—", "—"]
    # the same default miou 0.3 everywhere: a tie, both marked best; one seed: no std
    assert hps[2] == "0.3000 ± 0.0000 *"
    assert mtan[2] == "0.3000 ± nan *"


def test_lower_is_better_best_mark(fab):
    runs = [
        fab.run("a", delta=fab.delta(1.0, per_metric=5.0)),
        fab.run("b", method=("mtan", "ew", None), delta=fab.delta(0.5, per_metric=-5.0)),
    ]
    cells = _cells(format_table(compare_runs(runs)))
    assert cells[1][4:6] == ["+1.00 ± nan *", "+5.00 ± nan"]
    assert cells[2][4:6] == ["+0.50 ± nan", "-5.00 ± nan *"]


def test_json_round_trip(scenario):
    doc = json.loads(comparison_to_json(compare_runs(scenario)))
    assert doc["dataset"] == "synthetic"
    assert doc["paired_seeds"] == [0, 1]
    assert doc["delta_higher_is_better"] == {
        "per_task": True,
        "per_metric": False,
        "task_then_metric": True,
    }
    mtan, hps = doc["methods"]
    assert mtan["label"] == "mtan+ew"
    assert hps["label"] == "hps+ew"
    assert hps["runs"] == {"0": str(scenario[1]), "1": str(scenario[2]), "2": str(scenario[4])}
    assert hps["primary"]["semseg"]["per_seed"] == {"0": 0.40, "1": 0.42, "2": 0.44}
    assert hps["delta"]["per_task"]["std"] == pytest.approx(math.sqrt(7 / 3))
    assert hps["delta"]["per_task"]["n"] == 3
    assert doc["performance_ratios"]["problems"] == [
        ["semseg", 0],
        ["semseg", 1],
        ["depth", 0],
        ["depth", 1],
    ]
    # miou (↑): best/own; rmse (↓): own/best; mtan is best or tied everywhere
    ratios = doc["performance_ratios"]["ratios"]
    assert ratios["mtan+ew"] == [1.0, 1.0, 1.0, 1.0]
    assert ratios["hps+ew"] == pytest.approx([0.50 / 0.40, 0.46 / 0.42, 0.9 / 0.8, 1.0])


def test_json_writes_nan_as_null(fab):
    doc = json.loads(comparison_to_json(compare_runs([fab.run("a", delta=fab.delta(1.0))])))
    stat = doc["methods"][0]["primary"]["semseg"]
    assert stat["std"] is None
    assert stat["n"] == 1
