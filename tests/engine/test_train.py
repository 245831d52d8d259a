"""The training loop end to end on tiny synthetic data."""

import json
import math

import pytest
import torch

from pymtl.engine import train
from pymtl.engine.checkpoint import CheckpointError, load_checkpoint
from pymtl.engine.step import NonFiniteLossError, TrainStep
from pymtl.errors import PymtlError


def _weights(run):
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_run_directory_contents(tiny, registry, tmp_path):
    run = tmp_path / "run"
    record = train(tiny(), run, registry=registry, progress=False)
    assert (run / "config.toml").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary == json.loads(json.dumps(record, default=str).replace("NaN", "null"))
    assert set(summary["metrics"]) == {"semseg", "depth", "count"}
    assert math.isfinite(summary["metrics"]["depth"]["rmse"])
    assert summary["delta"] is None  # no baselines stored
    assert summary["images_per_s"] > 0
    assert list((run / "tb").iterdir())
    assert {p.name for p in (run / "plots").iterdir()} >= {"loss.png", "weights.png", "metrics.png"}


def test_resume_gives_the_same_weights(tiny, registry, tmp_path, monkeypatch):
    config = tiny("train.checkpoint_every=2")
    straight = tmp_path / "straight"
    train(config, straight, registry=registry, progress=False)

    calls = {"n": 0}
    original = TrainStep.__call__

    def dies_at_step_7(self, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # mid epoch 2: the last checkpoint is after step 6
            raise KeyboardInterrupt
        return original(self, batch, **kwargs)

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(TrainStep, "__call__", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(config, interrupted, registry=registry, progress=False)
    monkeypatch.setattr(TrainStep, "__call__", original)
    assert load_checkpoint(interrupted / "checkpoints" / "last.pt")["global_step"] == 6
    train(config, interrupted, resume=True, registry=registry, progress=False)
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    epochs = [
        json.loads(x)["epoch"] for x in (interrupted / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]

    # the resumed epoch's means include the steps before the interruption
    def train_losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [v for x in lines for v in json.loads(x)["train"]["loss"].values()]

    assert train_losses(interrupted) == pytest.approx(train_losses(straight))


def test_refuses_to_overwrite_a_run(tiny, registry, tmp_path):
    run = tmp_path / "run"
    train(tiny("train.epochs=1"), run, registry=registry, progress=False)
    with pytest.raises(PymtlError, match="already holds a run; use --resume"):
        train(tiny("train.epochs=1"), run, registry=registry, progress=False)


def test_resume_with_another_config_is_refused(tiny, registry, tmp_path):
    run = tmp_path / "run"
    train(tiny("train.epochs=1"), run, registry=registry, progress=False)
    with pytest.raises(CheckpointError, match="written by another configuration"):
        train(
            tiny("train.epochs=1", "train.lr=0.5"),
            run,
            resume=True,
            registry=registry,
            progress=False,
        )


def test_corrupt_checkpoint_is_refused(tiny, registry, tmp_path):
    run = tmp_path / "run"
    train(tiny("train.epochs=1"), run, registry=registry, progress=False)
    path = run / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"unreadable .* truncated"):
        train(tiny("train.epochs=1"), run, resume=True, registry=registry, progress=False)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


def test_checkpoint_write_is_atomic(tiny, registry, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny("train.epochs=1"), run, registry=registry, progress=False)
    before = (run / "checkpoints" / "last.pt").read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    from pymtl.engine.checkpoint import save_checkpoint

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(run / "checkpoints" / "last.pt", {"x": 1})
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]


def test_nan_loss_stops_naming_task_and_step(tiny, registry, tmp_path, monkeypatch):
    from pymtl.tasks.base import DepthTask

    original = DepthTask.loss
    calls = {"n": 0}

    def poisoned(self, pred, target, labelled=None):
        calls["n"] += 1
        value = original(self, pred, target, labelled)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(DepthTask, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss: depth=nan at epoch 1, step 3"):
        train(tiny(), tmp_path / "run", registry=registry, progress=False)


def test_missing_components_are_named(registry, tmp_path):
    from pymtl.config import resolve_config

    with pytest.raises(PymtlError, match="no dataset configured"):
        train(
            resolve_config({"arch": {"name": "hps"}}, registry),
            tmp_path / "a",
            registry=registry,
            progress=False,
        )
