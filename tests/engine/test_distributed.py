"""`pymtl train` under torchrun: 2 gloo processes give the single-process result."""

import os
import subprocess
import sys

import pytest
import torch

from pymtl.engine.checkpoint import load_checkpoint

CONFIG = """\
[dataset]
name = "synthetic"
image_size = 16
train_size = 16
val_size = 4
test_size = 4
tasks = ["semseg", "depth", "normals", "count"]
hflip = false

[arch]
name = "hps"
head_channels = 4
head_norm = "group"

[arch.backbone]
name = "convnet"
width = 4
norm = "group"

[train]
epochs = 2
batch_size = 4
optimizer = "sgd"
lr = 0.05
"""


def _run(args, cwd):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYMTL_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYMTL_HOME": str(cwd / "home"),
    }
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
@pytest.mark.parametrize("balancer", ["ew", "pcgrad", "mgda", "nash_mtl"])
def test_two_gloo_processes_match_one(tmp_path, balancer):
    """Gram balancers see the Gram of rank-averaged gradients and draw the same random task
    orders on every process, so two processes reproduce one."""
    (tmp_path / "run.toml").write_text(CONFIG + f'\n[balancer]\nname = "{balancer}"\n')
    _run(["-m", "pymtl", "train", "-c", "run.toml", "--out", "single"], tmp_path)
    _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "pymtl",
            "train",
            "-c",
            "run.toml",
            "--out",
            "ddp",
        ],
        tmp_path,
    )
    single = load_checkpoint(tmp_path / "single/checkpoints/last.pt")
    ddp = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    assert single["global_step"] == ddp["global_step"] == 8
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # the logged (process-averaged) losses are the single process's global-batch losses
    import json

    losses = [
        json.loads(line)["train"]["loss"]
        for run in ("single", "ddp")
        for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
    ]
    for a, b in zip(losses[:2], losses[2:], strict=True):
        assert a == pytest.approx(b, rel=1e-4)
