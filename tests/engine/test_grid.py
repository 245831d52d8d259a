"""``pymtl grid``: the weight grid, the choice of the best point, and one tiny end-to-end run."""

import json
import tomllib

import pytest
from click.testing import CliRunner

from pymtl.cli import main
from pymtl.engine.grid import GridPoint, best_point, parse_weight_spec, weight_grid
from pymtl.errors import ConfigError


def test_parse_weight_spec():
    assert parse_weight_spec(["depth=0.1,1,10", "normals=1 10 10"]) == {
        "depth": (0.1, 1.0, 10.0),
        "normals": (1.0, 10.0),
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["depth"], "expected TASK=V1,V2"),
        (["depth=a,b"], "must be numbers"),
        (["depth=-1"], "finite and >= 0"),
        (["depth=1", "depth=2"], "given twice"),
        ([], "no --weights"),
    ],
)
def test_parse_weight_spec_errors(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_weight_spec(items)


def test_grid_puts_equal_weights_first_and_once():
    grid = weight_grid(
        {"depth": (0.1, 1.0), "normals": (1.0, 10.0)}, ["semseg", "depth", "normals"]
    )
    assert grid == [
        {"depth": 1.0, "normals": 1.0},
        {"depth": 0.1, "normals": 1.0},
        {"depth": 0.1, "normals": 10.0},
        {"depth": 1.0, "normals": 10.0},
    ]
    assert weight_grid({"depth": (5.0,)}, ["depth"]) == [{"depth": 1.0}, {"depth": 5.0}]


def test_grid_refuses_unknown_tasks():
    with pytest.raises(ConfigError, match=r"unknown task\(s\) dpeth; the dataset's tasks are"):
        weight_grid({"dpeth": (1.0,)}, ["semseg", "depth"])


def _record(tmp_path, name, seed, miou, rmse, delta=None):
    run = tmp_path / name
    run.mkdir()
    record = {
        "seed": seed,
        "tasks": {
            "seg": {"primary": "miou", "higher_is_better": True},
            "depth": {"primary": "rmse", "higher_is_better": False},
        },
        "metrics": {"seg": {"miou": miou}, "depth": {"rmse": rmse}},
        "delta": None if delta is None else {"per_task": delta},
    }
    (run / "metrics.json").write_text(json.dumps(record))
    return run


def test_best_point_against_equal_weights(tmp_path):
    ones = GridPoint(
        {"depth": 1.0},
        (_record(tmp_path, "a0", 0, 0.5, 1.0), _record(tmp_path, "a1", 1, 0.4, 2.0)),
    )
    # seed 0: seg +10%, depth -10% (rmse up) -> 0; seed 1: seg +0%, depth +50% -> +25
    other = GridPoint(
        {"depth": 10.0},
        (_record(tmp_path, "b0", 0, 0.55, 1.1), _record(tmp_path, "b1", 1, 0.4, 1.0)),
    )
    best, scores, against = best_point([ones, other])
    assert against == "equal weights"
    assert best is other
    assert scores[0][1] == 0.0
    assert scores[1][1] == pytest.approx(12.5)


def test_best_point_uses_baselines_when_stored(tmp_path):
    ones = GridPoint({"depth": 1.0}, (_record(tmp_path, "a", 0, 0.5, 1.0, delta=-2.0),))
    other = GridPoint({"depth": 3.0}, (_record(tmp_path, "b", 0, 0.1, 9.0, delta=-5.0),))
    best, scores, against = best_point([ones, other])
    assert (best, against) == (ones, "baselines")
    assert [s for _, s in scores] == [-2.0, -5.0]


def test_grid_command_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "home"))  # no stored baselines
    root = tmp_path / "grid"
    args = [
        "grid", "--dataset", "synthetic", "--arch", "hps", "--weights", "depth=1,4",
        "--set", "dataset.image_size=16", "--set", "dataset.train_size=8",
        "--set", "dataset.val_size=4", "--set", 'dataset.tasks=["semseg","depth"]',
        "--set", "arch.backbone.name=convnet", "--set", "arch.backbone.width=4",
        "--set", "train.batch_size=4",
        "--root", str(root),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "vs equal weights" in result.output
    assert "fixed-depth1" in result.output
    assert "fixed-depth4" in result.output
    assert "<- best" in result.output
    best = tomllib.loads((root / "best.toml").read_text())
    assert best["balancer"]["name"] == "fixed"
    assert best["balancer"]["weights"]["depth"] in (1.0, 4.0)
    again = CliRunner().invoke(main, args)  # finished points are skipped
    assert again.exit_code == 0
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "fixed-depth1_seed0",
        "fixed-depth4_seed0",
    ]
