import json
import math
import re

import pytest

from pymtl.reporting import Run, RunFormatError, load_run


def test_reads_the_three_files(fab):
    path = fab.run("hps-ew-3", seed=3, method=("hps", "ew", "kd"))
    run = load_run(path)
    assert isinstance(run, Run)
    assert run.path == path
    assert run.name == "hps-ew-3"
    assert run.seed == 3
    assert run.method == ("hps", "ew", "kd")
    assert run.config["dataset"] == {"name": "synthetic", "image_size": 32, "root": "/data"}
    assert [r["epoch"] for r in run.history] == [0, 1, 2]
    assert run.history[1]["train"]["loss"]["semseg"] == pytest.approx(1.0)
    assert run.summary is not None
    assert run.summary["split"] == "val"
    assert run.summary["delta"] is None


def test_distill_absent_is_none(fab):
    assert load_run(fab.run("r")).method == ("hps", "ew", None)


def test_null_numbers_become_nan(fab):
    record = fab.record(0)
    record["train"]["loss"]["depth"] = None
    record["train"]["lr"] = None
    record["metrics"]["semseg"]["miou"] = None
    path = fab.run(
        "r",
        history=[record],
        metrics={"semseg": {"miou": None, "pixel_acc": 0.5}, "depth": {"rmse": 1.0}},
        delta=fab.delta(per_task=None, per_metric=1.5),
    )
    run = load_run(path)
    assert math.isnan(run.history[0]["train"]["loss"]["depth"])
    assert math.isnan(run.history[0]["train"]["lr"])
    assert math.isnan(run.history[0]["metrics"]["semseg"]["miou"])
    assert math.isnan(run.summary["metrics"]["semseg"]["miou"])
    assert math.isnan(run.summary["delta"]["per_task"])
    assert run.summary["delta"]["per_metric"] == 1.5


def test_summary_is_optional_until_required(fab):
    run = load_run(fab.run("training", summary=False))
    assert run.summary is None
    with pytest.raises(RunFormatError, match=r"training/metrics\.json does not exist"):
        run.require_summary()


@pytest.mark.parametrize("name", ["config.toml", "metrics.jsonl"])
def test_missing_required_file_is_named(fab, name):
    path = fab.run("r")
    (path / name).unlink()
    with pytest.raises(RunFormatError, match=re.escape(f"r/{name} does not exist")):
        load_run(path)


def test_missing_directory(tmp_path):
    with pytest.raises(RunFormatError, match="does not exist or is not a directory"):
        load_run(tmp_path / "nope")


def test_corrupt_jsonl_line_is_named(fab):
    path = fab.run("r")
    lines = (path / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:40]  # a line cut short, as by a crash mid-write
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFormatError, match=r"metrics\.jsonl line 2: not valid JSON"):
        load_run(path)


def test_blank_lines_are_skipped_but_counted(fab):
    path = fab.run("r")
    lines = (path / "metrics.jsonl").read_text().splitlines()
    text = lines[0] + "\n\n" + lines[1] + "\n" + '{"epoch": "two"}' + "\n\n"
    (path / "metrics.jsonl").write_text(text)
    with pytest.raises(RunFormatError, match=r"line 4: 'epoch' must be an integer \(got 'two'\)"):
        load_run(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("train"), r"line 1: 'train\.loss' must be an object"),
        (lambda r: r.pop("metrics"), r"line 1: 'metrics' must be an object"),
        (lambda r: r["metrics"]["depth"].update(rmse="x"), r"metrics\.depth\.rmse must be a num"),
        (lambda r: r["train"]["weights"].update(depth=True), r"train\.weights\.depth must be"),
    ],
)
def test_bad_history_values_are_named(fab, change, message):
    record = fab.record(0)
    change(record)
    path = fab.run("r", history=[record])
    with pytest.raises(RunFormatError, match=message):
        load_run(path)


def test_history_line_that_is_not_an_object(fab):
    path = fab.run("r")
    (path / "metrics.jsonl").write_text("[1, 2]\n")
    with pytest.raises(RunFormatError, match="line 1: expected a JSON object"):
        load_run(path)


def test_invalid_toml_is_named(fab):
    path = fab.run("r")
    (path / "config.toml").write_text("seed = = 1\n")
    with pytest.raises(RunFormatError, match=r"r/config\.toml is not valid TOML"):
        load_run(path)


def test_invalid_summary_is_named(fab):
    path = fab.run("r")
    (path / "metrics.json").write_text("{")
    with pytest.raises(RunFormatError, match=r"r/metrics\.json is not valid JSON"):
        load_run(path)
    (path / "metrics.json").write_text(json.dumps({"metrics": {}, "tasks": [], "delta": None}))
    with pytest.raises(RunFormatError, match=r"metrics\.json: key 'tasks' must be an object"):
        load_run(path)
    doc = {"metrics": {"seg": {"miou": "high"}}, "tasks": {}}
    (path / "metrics.json").write_text(json.dumps(doc))
    with pytest.raises(RunFormatError, match=r"metrics\.json: metrics\.seg\.miou must be a numb"):
        load_run(path)


def test_bad_seed_and_method_sections_are_named(fab):
    path = fab.run("r")
    (path / "config.toml").write_text('seed = "zero"\n[balancer]\nname = "ew"\n')
    run = load_run(path)
    with pytest.raises(RunFormatError, match=r"config\.toml: 'seed' must be an integer"):
        _ = run.seed
    with pytest.raises(RunFormatError, match=r"config\.toml: no \[arch\] section"):
        _ = run.method
