"""PAP-Net (``papnet``): the diffusion wiring, α's gradient, the norms, deep supervision, the
partition, and training [pymtl]."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import pymtl.architectures.papnet as papnet_module
from pymtl.architectures._distill import upsample
from pymtl.architectures.base import split_outputs
from pymtl.architectures.papnet import AFFINITY_NORMS, PAPNet, PAPNetConfig, affinity_grid
from pymtl.backbones.convnet import ConvNet
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.ops import pap
from pymtl.tasks import ClassificationTask, DepthTask, NormalsTask, SegmentationTask
from pymtl.testing import check_architecture, default_tasks

SEG = SegmentationTask(name="seg", num_classes=3)
DEPTH = DepthTask(name="depth", mean=2.0)
COUNT = ClassificationTask(name="cls", num_classes=4)
TASKS = (SEG, DEPTH, NormalsTask(name="normals"), COUNT)


def _convnet() -> BackboneSection:
    return BackboneSection(name="convnet", options=ConvNet.Config(width=4))


def _net(**options: Any) -> PAPNet:
    torch.manual_seed(0)
    options = {"channels": 8, "affinity_channels": 4, **options}
    return PAPNet(TASKS, backbone=_convnet(), **options)


def _final_inputs(net: PAPNet) -> dict[str, Tensor]:
    """Record what every reconstruction head receives in the next forward."""
    seen: dict[str, Tensor] = {}
    for name, head in net.final.items():
        head.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
    return seen


def test_beta_zero_makes_the_diffusion_the_identity() -> None:
    x = torch.randn(2, 3, 30, 26)
    for beta, identity in ((0.0, True), (0.5, False)):
        net = _net(beta=beta, steps=3).eval()
        seen = _final_inputs(net)
        with torch.no_grad():
            net(x)
            features = net.initial(net.encode(x))
            grid = affinity_grid(x.shape[-2:], 0.25)
            assert grid == (8, 6)
            for t, reduce in net.reduce.items():
                reduced = upsample(reduce(features[t]), grid)
                assert seen[t].shape == (2, 4, 8, 6)
                assert torch.equal(seen[t], reduced) is identity, (t, beta)


def test_pap_diffuse_receives_the_reduced_features_on_the_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    real = pap.pap_diffuse

    def recording(f: Tensor, x: Tensor, alpha_logits: Tensor, **kw: Any) -> Tensor:
        calls.append({"f": f.shape, "same": x is f, "alpha": alpha_logits, **kw})
        out: Tensor = real(f, x, alpha_logits, **kw)
        return out

    monkeypatch.setattr(papnet_module, "pap_diffuse", recording)
    net = _net(steps=2, norm="linear_relu", beta=0.2, affinity_scale=0.5).eval()
    with torch.no_grad():
        net(torch.randn(2, 3, 16, 24))
    assert len(calls) == 1
    call = calls[0]
    assert call["f"] == (2, 3, 8 * 12, 4)  # [B, T dense, N = (H/2)(W/2), C']
    assert call["same"]
    assert call["alpha"] is net.alpha_logits
    assert (call["beta"], call["steps"], call["norm"]) == (0.2, 2, "linear_relu")


def test_affinity_grid_defaults_to_a_quarter_of_the_input() -> None:
    assert PAPNetConfig().affinity_scale == 0.25
    assert affinity_grid((64, 64), 0.25) == (16, 16)
    assert affinity_grid((33, 29), 0.25) == (8, 7)
    assert affinity_grid((2, 3), 0.25) == (1, 1)


def test_alpha_logits_start_at_zero_and_receive_a_gradient() -> None:
    net = _net().train()
    assert torch.equal(net.alpha_logits.detach(), torch.zeros(3, 3))
    out = net(torch.randn(2, 3, 16, 16))
    sum(y.square().mean() for y in out.values()).backward()
    grad = net.alpha_logits.grad
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("norm", AFFINITY_NORMS)
def test_every_norm_runs_forward_and_backward(norm: str) -> None:
    net = _net(norm=norm, beta=0.5).train()
    out = net(torch.randn(2, 3, 16, 20))
    assert out["seg"].shape == (2, 3, 16, 20)
    assert all(torch.isfinite(y).all() for y in out.values())
    sum(y.mean() for y in out.values()).backward()
    assert net.alpha_logits.grad is not None
    assert torch.isfinite(net.alpha_logits.grad).all()


def test_deep_supervision_keys_in_training_only() -> None:
    net = _net()
    x = torch.randn(2, 3, 16, 16)
    keys = set(net.train()(x))
    assert keys == {"seg", "depth", "normals", "cls", "seg/initial", "depth/initial",
                    "normals/initial"}  # fmt: skip
    with torch.no_grad():
        assert set(net.eval()(x)) == {"seg", "depth", "normals", "cls"}


def test_partition_shares_the_affinity_path() -> None:
    net = _net()
    shared = {id(p) for p in net.shared_parameters()}
    assert id(net.alpha_logits) in shared
    assert {id(p) for p in net.reduce.parameters()} <= shared
    assert {id(p) for p in net.initial.blocks.parameters()} <= shared
    seg = {id(p) for p in net.task_parameters("seg")}
    assert seg == {id(p) for p in net.final["seg"].parameters()} | {
        id(p) for p in net.initial.predictors["seg"].parameters()
    }
    assert {id(p) for p in net.task_parameters("cls")} == {
        id(p) for p in net.image_heads["cls"].parameters()
    }
    assert not {id(p) for p in net.image_heads.parameters()} & shared


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"steps": 9}, "'steps' must be an integer in [1, 8]"),
        ({"beta": 1.5}, "'beta' must be a number in [0, 1]"),
        ({"affinity_channels": 6}, "'affinity_channels' must be a multiple of 4"),
        ({"affinity_scale": 0.0}, "'affinity_scale' must be a number in (0, 1]"),
        ({"norm": "l2"}, "'norm' must be one of 'softmax', 'cosine_sum', 'linear_relu' (got 'l2')"),
        ({"head_norm": "layer"}, "'head_norm' must be one of 'batch', 'group' (got 'layer')"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _net(**options)
    assert str(info.value).startswith(f"architecture 'papnet': {field}")


def test_refuses_image_level_tasks_only() -> None:
    with pytest.raises(ConfigError, match="'papnet' distils between dense tasks"):
        PAPNet((COUNT,), backbone=_convnet())


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_check_architecture(size: tuple[int, int]) -> None:
    config = PAPNetConfig(channels=8, affinity_channels=4, backbone=_convnet())
    check_architecture(PAPNet, tasks=default_tasks(), config=config, size=size)


def test_check_architecture_with_two_steps() -> None:
    config = PAPNetConfig(channels=8, affinity_channels=4, backbone=_convnet(), steps=2)
    check_architecture(PAPNet, tasks=(SEG, DEPTH), config=config, size=(16, 16))


def test_adam_steps_reduce_the_summed_loss_with_aux_losses() -> None:
    tasks = (SEG, DEPTH)
    torch.manual_seed(0)
    net = PAPNet(tasks, backbone=_convnet(), channels=8, affinity_channels=4, beta=0.5).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    targets = {
        "depth": torch.rand(4, 1, 16, 16, generator=gen) + 1.5,
        "seg": torch.randint(0, 3, (4, 16, 16), generator=gen),
    }
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(10):
        grouped = split_outputs(net(x), net.tasks)
        assert [len(v) for v in grouped.values()] == [2, 2]
        total = sum(t.loss(y, targets[t.name]) for t in tasks for y in grouped[t.name])
        assert isinstance(total, Tensor)
        opt.zero_grad()
        total.backward()  # type: ignore[no-untyped-call]
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.9 * totals[0], totals
