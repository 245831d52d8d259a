"""Every registered architecture trains the synthetic smoke preset through ``pymtl train``
(shrunk: fewer, smaller images, tiny widths, one epoch) and reports every task's metrics."""

from __future__ import annotations

import json

import attrs
import pytest
from click.testing import CliRunner

from pymtl.cli import main
from pymtl.plugins import get_registry

NAMES = get_registry(autoload=False).names("architecture")
# architectures defined for exactly two dense tasks get the smoke preset's first two
TWO_TASKS = {"jtrl"}
SHRINK = [
    "dataset.image_size=32",
    "dataset.train_size=8",
    "dataset.val_size=4",
    "dataset.test_size=4",
    "train.epochs=1",
    "train.batch_size=4",
    'arch.backbone.name="convnet"',
    "arch.backbone.width=4",
]


@pytest.mark.parametrize("name", NAMES)
def test_trains_the_smoke_preset(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "home"))
    cls = get_registry(autoload=False).get("architecture", name)
    fields = {f.name for f in attrs.fields(cls.Config)}
    # the arch.* shrinking options that this architecture's Config has
    sets = [s for s in SHRINK if not s.startswith("arch.") or s.split(".")[1] in fields]
    if "head_channels" in fields:
        sets.append("arch.head_channels=4")
    if name in TWO_TASKS:
        sets.append('dataset.tasks=["semseg", "depth"]')
    args = ["train", "--dataset", "synthetic", "--preset", "smoke", "--arch", name]
    args += [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    tasks = ["semseg", "depth"] if name in TWO_TASKS else ["semseg", "depth", "normals", "count"]
    assert sorted(summary["metrics"]) == sorted(tasks)
