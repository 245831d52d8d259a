"""The teacher workflow of ``pymtl train --distill``: teachers from the baselines store or a
named run, their checks, the teacher cache, checkpoints, and every distiller end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pymtl.config import resolve_config
from pymtl.engine.checkpoint import load_checkpoint
from pymtl.engine.loop import train
from pymtl.engine.runs import train_baselines
from pymtl.engine.step import TrainStep
from pymtl.errors import ConfigError
from pymtl.plugins import get_registry
from tests._configs import TINY

REGISTRY = get_registry(autoload=False)


def _config(*overrides: str):
    return resolve_config(TINY, REGISTRY, overrides=list(overrides))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A store with the tiny setting's single-task baselines (seed 0) and a finished hps run
    (a multi-task teacher)."""
    root = tmp_path_factory.mktemp("distill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYMTL_HOME", str(root / "home"))
        train_baselines(_config(), REGISTRY, [0], root / "baselines")
        train(_config("train.epochs=1"), root / "hps", registry=REGISTRY, progress=False)
        yield root


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "overrides",
    [
        ['distill.name="kd4mtl"'],
        ['distill.name="kd4mtl"', 'distill.layers="mid+last"', 'distill.adaptor="nonlinear"'],
        ['distill.name="bam"'],
        ['distill.name="hinton_kd"', 'distill.regression="l2"'],
        ['distill.name="kdam"', "TEACHER"],
    ],
    ids=["kd4mtl", "kd4mtl-mid", "bam", "hinton_kd", "kdam"],
)
def test_each_distiller_trains_end_to_end(home, tmp_path, overrides):
    sets = [
        f"teacher.run={json.dumps(str(home / 'hps'))}" if o == "TEACHER" else o for o in overrides
    ]
    run = tmp_path / "run"
    record = train(_config(*sets), run, registry=REGISTRY, progress=False)
    assert sorted(record["metrics"]) == ["count", "depth", "semseg"]
    for epoch in _history(run):
        terms = epoch["train"]["distill"]
        assert sorted(terms) == ["count", "depth", "semseg"]
        assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert (run / "plots" / "loss.png").is_file()


def test_teacher_cache_gives_the_same_losses_as_live_teachers(home, tmp_path):
    live, cached = tmp_path / "live", tmp_path / "cached"
    train(_config('distill.name="kd4mtl"'), live, registry=REGISTRY, progress=False)
    config = _config('distill.name="kd4mtl"', "teacher.cache=true")
    train(config, cached, registry=REGISTRY, progress=False)
    assert (cached / "teacher-cache" / "meta.json").is_file()
    for a, b in zip(_history(live), _history(cached), strict=True):
        for key in ("loss", "distill"):
            assert a["train"][key] == pytest.approx(b["train"][key], rel=1e-6)


def test_adaptors_and_their_optimiser_state_resume_exactly(home, tmp_path, monkeypatch):
    config = _config('distill.name="kd4mtl"', "train.checkpoint_every=2")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(config, straight, registry=REGISTRY, progress=False)
    original, calls = TrainStep.__call__, {"n": 0}

    def dies_at_step_7(self, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # mid epoch 2: the last checkpoint is after step 6
            raise KeyboardInterrupt
        return original(self, batch, **kwargs)

    monkeypatch.setattr(TrainStep, "__call__", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(config, interrupted, registry=REGISTRY, progress=False)
    monkeypatch.setattr(TrainStep, "__call__", original)
    train(config, interrupted, resume=True, registry=REGISTRY, progress=False)
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (straight, interrupted))
    assert a["distill"].keys() == b["distill"].keys()
    assert len(a["distill"]) == 3  # one adaptor per task
    for key in a["distill"]:
        assert torch.equal(a["distill"][key], b["distill"][key]), key
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    adaptors = a["optimizer"]["param_groups"][-1]  # KD4MTL's own group: lr 0.1, wd 5e-4
    assert (adaptors["initial_lr"], adaptors["weight_decay"]) == (0.1, 5e-4)
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][index]["exp_avg"])
    # the resumed epoch's means include the steps before the interruption
    for key in ("loss", "weights", "distill"):
        assert _history(straight)[-1]["train"][key] == _history(interrupted)[-1]["train"][key]


def _refused(config, tmp_path, match):
    with pytest.raises(ConfigError, match=match):
        train(config, tmp_path / "run", registry=REGISTRY, progress=False)


def test_incompatible_teachers_are_refused(home, tmp_path, monkeypatch):
    stl = next((home / "baselines").iterdir())
    kd = 'distill.name="kd4mtl"'
    _refused(_config(kd, "seed=1"), tmp_path, r"no seed 1 .*stored seeds: \[0\]")
    _refused(_config('distill.name="kdam"'), tmp_path, "one multi-task teacher: name its run")
    run = f"teacher.run={json.dumps(str(home / 'hps'))}"
    _refused(_config(kd, run), tmp_path, "needs single-task teachers, but teacher run .* 'hps'")
    stl_run = f"teacher.run={json.dumps(str(stl))}"
    _refused(
        _config(kd, stl_run, "dataset.train_size=12"),
        tmp_path,
        r"another dataset configuration \(train_size: teacher 16, student 12\)",
    )
    _refused(
        _config(kd, stl_run, "arch.backbone.width=8"),
        tmp_path,
        r"features at layer 'last' of task 'semseg' have per-sample shape \(4, 8, 8\), "
        r"the student's \(8, 8, 8\)",
    )
    unfinished = tmp_path / "unfinished"
    shutil.copytree(stl, unfinished)
    (unfinished / "metrics.json").unlink()
    teacher = f"teacher.run={json.dumps(str(unfinished))}"
    _refused(_config(kd, teacher), tmp_path, "has not finished")
    edited = tmp_path / "edited"  # config.toml no longer describes the checkpoint's network
    shutil.copytree(stl, edited)
    text = (edited / "config.toml").read_text()
    (edited / "config.toml").write_text(text.replace("head_channels = 4", "head_channels = 6"))
    teacher = f"teacher.run={json.dumps(str(edited))}"
    _refused(_config(kd, teacher), tmp_path, "checkpoint does not fit the network")
    _refused(_config(kd, 'arch.name="cross_stitch"'), tmp_path, "no shared representation")
    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "empty"))
    _refused(_config(kd), tmp_path, "baselines store has none for this setting")


def test_a_teacher_section_needs_a_distillation_loss():
    with pytest.raises(ConfigError, match=r"\[teacher\] section without a distillation loss"):
        _config("teacher.cache=true")
    assert _config('distill.name="bam"').teacher is not None  # resolved to its defaults
    assert _config().teacher is None  # and absent without distillation
