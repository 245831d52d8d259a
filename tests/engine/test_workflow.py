"""The research workflow through the CLI: baselines -> train (Δ_MTL) -> eval; sweep -> compare."""

import json

import pytest
from click.testing import CliRunner

from pymtl.cli import main

TINY_TOML = """\
[dataset]
name = "synthetic"
image_size = 16
train_size = 16
val_size = 8
test_size = 8
tasks = ["semseg", "depth"]
hflip = false

[arch]
name = "hps"
head_channels = 4

[arch.backbone]
name = "convnet"
width = 4

[train]
epochs = 1
batch_size = 4
"""


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "1")
    (tmp_path / "tiny.toml").write_text(TINY_TOML)

    def invoke(*args):
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


def test_baselines_then_train_reports_delta(cli, tmp_path):
    out = cli("baselines", "-c", "tiny.toml", "--seeds", "0", "1")
    assert "stored single-task baselines for seeds [0, 1]" in out
    (store,) = (tmp_path / "home" / "baselines").glob("synthetic-*.json")
    assert [r["seed"] for r in json.loads(store.read_text())["results"]] == [0, 1]
    out = cli("train", "-c", "tiny.toml", "--balancer", "ew", "--out", "runs/hps")
    assert "Δ_MTL per-task" in out
    assert str(store) in out
    summary = json.loads((tmp_path / "runs/hps/metrics.json").read_text())
    assert summary["delta"]["baseline"]["seeds"] == [0, 1]
    assert set(summary["delta"]) >= {"per_task", "per_metric", "task_then_metric"}
    # again: finished seeds are skipped, not retrained
    assert "seed 1: already trained" in cli("baselines", "-c", "tiny.toml", "--seeds", "1")
    out = cli("eval", "runs/hps", "--split", "test")
    assert "test results" in out
    assert json.loads((tmp_path / "runs/hps/eval-test.json").read_text())["split"] == "test"


def test_train_print_config_and_overwrite(cli, tmp_path):
    printed = cli("train", "-c", "tiny.toml", "--print-config")
    assert 'name = "hps"' in printed
    assert not (tmp_path / "runs").exists()
    cli("train", "-c", "tiny.toml", "--out", "runs/a")
    result = CliRunner().invoke(main, ["train", "-c", "tiny.toml", "--out", "runs/a"])
    assert result.exit_code == 2
    assert "already holds a run" in result.output
    cli("train", "-c", "tiny.toml", "--out", "runs/a", "--overwrite")


def test_sweep_is_resumable_and_ends_in_compare(cli, tmp_path):
    out = cli(
        "sweep",
        "-c",
        "tiny.toml",
        "--balancers",
        "ew,fixed",
        "--seeds",
        "0,1",
        "--root",
        "runs/sweep",
    )
    assert "hps+ew" in out
    assert "hps+fixed" in out
    runs = sorted(p.name for p in (tmp_path / "runs/sweep").iterdir() if p.is_dir())
    assert runs == ["hps_ew_seed0", "hps_ew_seed1", "hps_fixed_seed0", "hps_fixed_seed1"]
    assert (tmp_path / "runs/sweep/compare_delta.png").is_file()
    assert (tmp_path / "runs/sweep/performance_profile.png").is_file()
    again = CliRunner().invoke(
        main,
        [
            "sweep",
            "-c",
            "tiny.toml",
            "--balancers",
            "ew,fixed",
            "--seeds",
            "0,1",
            "--root",
            "runs/sweep",
        ],
    )
    assert again.exit_code == 0
    assert again.output.count("finished earlier, skipped") == 4
    compare = cli("compare", *[f"runs/sweep/{r}" for r in runs])
    assert "2 method(s)" in compare
