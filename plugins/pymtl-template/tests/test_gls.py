"""Tests of the ``gls`` balancer: pymtl's conformance check, hand-computed weights, the exact
gradient of the geometric mean, and discovery through ``pymtl plugins``."""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import subprocess
import sys

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from pymtl.testing import check_balancer
from pymtl_template import GeometricLoss, GeometricLossConfig, pymtl_register_balancers

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def test_conformance():
    check_balancer(GeometricLoss)
    check_balancer(GeometricLoss, config=GeometricLossConfig(eps=0.5))


def test_hook_registers_the_balancer():
    assert pymtl_register_balancers() == [GeometricLoss]


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ((1.0, 4.0), (1.0, 0.25)),  # L = 2: w = (2 / (2·1), 2 / (2·4))
        ((1.0, 2.0, 4.0), (2 / 3, 1 / 3, 1 / 6)),  # L = 2: w_t = 2 / (3·L_t)
        ((0.7,), (1.0,)),  # one task: the geometric mean is the loss itself
        ((3.0, 3.0, 3.0), (1 / 3, 1 / 3, 1 / 3)),
    ],
)
def test_hand_computed_weights(losses, expected):
    tasks = [f"t{i}" for i in range(len(losses))]
    out = GeometricLoss(tasks)(torch.tensor(losses, dtype=torch.float64))
    want = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(out.shared, want)
    torch.testing.assert_close(out.task, want)
    assert out.aux_loss is None


def test_eps_shifts_the_losses():
    # losses + eps = (1, 4): the weights of the hand-computed case, and a zero loss is accepted
    out = GeometricLoss(["seg", "depth"], eps=1.0)(torch.tensor([0.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(out.shared, torch.tensor([1.0, 0.25], dtype=torch.float64))
    built = GeometricLoss.from_config(GeometricLossConfig(eps=1.0), tasks=["seg", "depth"])
    assert built.eps == 1.0


@pytest.mark.parametrize(
    ("eps", "error"),
    [
        (-0.1, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        ("0.1", TypeError),
    ],
)
def test_eps_is_validated(eps, error):
    with pytest.raises(error, match="'eps'"):
        GeometricLossConfig(eps=eps)
    with pytest.raises(error, match="'eps'"):
        GeometricLoss(["seg"], eps=eps)


@pytest.mark.parametrize(
    ("losses", "eps", "named"),
    [
        ((0.5, 0.0, 2.0), 0.0, "depth=0"),
        ((-1.5, 1.0, 2.0), 0.0, "seg=-1.5"),
        ((0.5, 1.0, math.nan), 0.0, "normal=nan"),
        ((0.5, math.inf, 1.0), 0.0, "depth=inf"),
        ((0.5, -0.25, 1.0), 0.25, "depth=-0.25"),
    ],
)
def test_non_positive_losses_are_rejected(losses, eps, named):
    balancer = GeometricLoss(["seg", "depth", "normal"], eps=eps)
    with pytest.raises(ValueError, match="balancer 'gls': losses must be finite and > ") as info:
        balancer(torch.tensor(losses))
    assert named in str(info.value)
    others = [f"{t}=" for t in ("seg", "depth", "normal") if not named.startswith(t)]
    assert not any(o in str(info.value) for o in others), "only the offending tasks are named"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_weights_follow_losses_and_are_detached(device, dtype):
    losses = torch.tensor([0.5, 2.0, 8.0], device=device, dtype=dtype, requires_grad=True)
    out = GeometricLoss(["a", "b", "c"])(losses)
    for w in (out.shared, out.task):
        assert (w.dtype, w.device) == (dtype, losses.device)
        assert not w.requires_grad
    want = torch.tensor([4 / 3, 1 / 3, 1 / 12], dtype=torch.float64)  # L = 2
    torch.testing.assert_close(out.shared.double().cpu(), want, rtol=2e-3, atol=0)


positive = st.floats(min_value=1e-3, max_value=1e3)


@settings(deadline=None, max_examples=60)
@given(st.lists(positive, min_size=1, max_size=6), st.sampled_from([0.0, 0.3]))
def test_every_task_contributes_equally(losses, eps):
    # w_t (L_t + eps) = L / T for every t, so Σ_t w_t (L_t + eps) = L (the geometric mean)
    L = torch.tensor(losses, dtype=torch.float64)
    shifted = L + eps
    w = GeometricLoss([f"t{i}" for i in range(len(losses))], eps=eps)(L).shared
    gm = shifted.prod() ** (1 / len(losses))
    torch.testing.assert_close(w * shifted, (gm / len(losses)).expand(len(losses)))


def _tiny_model(seed: int, T: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Parameters (shared trunk + one head per task) and the T per-task losses they give."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(T, 8, generator=gen, dtype=torch.float64)
    trunk = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    heads = torch.randn(T, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(T, generator=gen, dtype=torch.float64) * 10  # losses of various sizes
    pred = (x @ trunk) @ heads.T  # [8, T]
    losses = scale * ((pred.T - y) ** 2).mean(dim=1) + 1e-3  # [T], > 0
    return [trunk, heads], losses


@settings(deadline=None, max_examples=40)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.sampled_from([0.0, 0.3]))
def test_weighted_sum_has_the_gradient_of_the_geometric_mean(seed, T, eps):
    # what pymtl's step computes: ∇ Σ_t w_t L_t with w detached; what the paper minimises:
    # ∇ (Π_t (L_t + eps))^(1/T). They must agree for the shared and the task parameters.
    params, losses = _tiny_model(seed, T)
    w = GeometricLoss([f"t{i}" for i in range(T)], eps=eps)(losses)
    step = torch.autograd.grad((w.shared * losses).sum(), params, retain_graph=True)
    objective = (losses + eps).prod() ** (1 / T)
    paper = torch.autograd.grad(objective, params)
    for got, want in zip(step, paper, strict=True):
        torch.testing.assert_close(got, want)


@settings(deadline=None, max_examples=40)
@given(st.integers(0, 2**31 - 1), st.integers(2, 5), st.floats(1e-2, 1e2))
def test_scaling_one_loss_keeps_the_direction(seed, T, c):
    # L_k → c·L_k multiplies the geometric mean by c^(1/T), hence the combined gradient too:
    # w_k → c^(1/T - 1) w_k meets ∇L_k → c ∇L_k, and w_j → c^(1/T) w_j for j ≠ k.
    params, losses = _tiny_model(seed, T)
    scaled = losses * torch.cat([torch.tensor([c], dtype=torch.float64), torch.ones(T - 1)])
    balancer = GeometricLoss([f"t{i}" for i in range(T)])
    d = torch.autograd.grad((balancer(losses).shared * losses).sum(), params, retain_graph=True)
    d_c = torch.autograd.grad((balancer(scaled).shared * scaled).sum(), params)
    for got, base in zip(d_c, d, strict=True):
        torch.testing.assert_close(got, c ** (1 / T) * base)


def test_listed_by_pymtl_plugins(tmp_path):
    """In a fresh interpreter, ``pymtl plugins`` lists gls from this distribution."""
    try:
        version = md.version("pymtl-template")
    except md.PackageNotFoundError:
        pytest.skip("pymtl-template is not installed: pip install -e plugins/pymtl-template")
    disabling = ("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "PYMTL_DISABLED_PLUGINS")
    env = {k: v for k, v in os.environ.items() if k not in disabling}
    proc = subprocess.run(
        [sys.executable, "-m", "pymtl", "plugins", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pymtl-template" not in proc.stderr, proc.stderr
    listed = json.loads(proc.stdout)
    summary = GeometricLoss.__doc__.strip().splitlines()[0]
    assert {
        "kind": "balancer",
        "name": "gls",
        "distribution": "pymtl-template",
        "version": version,
        "summary": summary,
    } in listed
