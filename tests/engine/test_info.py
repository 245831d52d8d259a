"""``pymtl info``: parameter partition, multiply-adds and measured peak training memory."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pymtl.cli import main
from pymtl.config import resolve_config
from pymtl.engine.info import format_infos, measure
from pymtl.plugins import get_registry

REGISTRY = get_registry(autoload=False)


def _config(size: int, arch: str = "hps"):
    doc = {
        "dataset": {
            "name": "synthetic",
            "image_size": size,
            "val_size": 4,
            "tasks": ["semseg", "depth", "count"],
        },
        "arch": {"name": arch, "head_channels": 4, "backbone": {"name": "convnet", "width": 4}},
    }
    return resolve_config(doc, REGISTRY)


def test_figures_add_up_and_scale_with_the_input():
    small, large = (measure(_config(s), REGISTRY, batch_size=2) for s in (16, 32))
    assert small.params == small.shared_params + sum(small.task_params.values())
    assert set(small.task_params) == {"semseg", "depth", "count"}
    assert small.input_size == (16, 16)
    assert small.backbone == "convnet"
    # convolutions dominate: 4× the pixels, ~4× the multiply-adds (image heads add a little)
    assert 3.8 < large.macs / small.macs < 4.2
    # parameters, their gradients and Adam's two moments are all live after the step
    assert small.peak_train_bytes >= 4 * 4 * small.params
    assert large.peak_train_bytes > small.peak_train_bytes


def test_macs_of_one_convolution_by_hand():
    from pymtl.engine.info import _macs

    class OneConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x):
            return {"y": self.conv(x)}

    assert _macs(OneConv(), torch.zeros(1, 3, 8, 6)) == 8 * 6 * 5 * 3 * 9  # type: ignore[arg-type]


def test_batch_size_larger_than_the_split_is_refused():
    with pytest.raises(ValueError, match="fewer than batch_size=5"):
        measure(_config(16), REGISTRY, batch_size=5)


def test_cli_table_and_json(monkeypatch, tmp_path):
    monkeypatch.setenv("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.chdir(tmp_path)
    common = ["info", "--dataset", "synthetic", "--archs", "hps,stl", "--batch-size", "2"]
    common += ["--set", "dataset.image_size=16", "--set", "dataset.val_size=2"]
    common += ["--set", "arch.head_channels=4", "--set", "arch.backbone.name=convnet"]
    common += ["--set", "arch.backbone.width=4"]
    result = CliRunner().invoke(main, [*common, "--format", "json"])
    assert result.exit_code == 0, result.output
    infos = json.loads(result.output)
    assert [i["arch"] for i in infos] == ["hps", "stl"]
    assert infos[1]["shared_params"] == 0
    table = CliRunner().invoke(main, common)
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[0].split()[:4] == ["arch", "backbone", "input", "params"]


def test_markdown_format_has_a_row_per_architecture():
    info = measure(_config(16), REGISTRY, batch_size=2)
    lines = format_infos([info, info], "markdown").splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("|---")


def test_pap_attention_counts_its_logits_and_products():
    from pymtl.engine.info import _macs
    from pymtl.ops import pap_attention

    class Attend(torch.nn.Module):
        def forward(self, x):
            f = x.reshape(1, 2, 12, 4)  # B=1, T=2, N=12, C'=4
            o, _ = pap_attention(f, torch.ones(1, 12, 6), 0.5)  # Cv = 6
            return {"y": o}

    assert _macs(Attend(), torch.zeros(1, 96)) == 2 * (12 * 12 * 4 + 12 * 12 * 6)  # type: ignore[arg-type]
