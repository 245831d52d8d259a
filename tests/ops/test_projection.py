"""Tests of the PCGrad / GradVac solvers (``pymtl.ops.projection``).

Oracles: the NumPy loops (``*_reference``) and, independently, the algorithms run on the
gradient vectors themselves (SPEC-methods §2.8, §2.9), checked through ``Jᵀ w = Σ_i pc_i``.

Tolerance: the kernels do the same operations as the reference loops except for the order of
the T-term sums in ``G c`` (updated as c changes instead of recomputed), so they differ by
rounding errors of those sums, O(T u) relative to ``Σ |G_jk c_k|``, carried through at most
T − 1 projections. With well-conditioned Grams (P ≥ T + 2, random) that stays below 1e-10
relative to ``max |w|``; the vector-space comparisons get 1e-8 like the balancer tests.
"""

from __future__ import annotations

import importlib
import math
import textwrap

import pytest
import torch
from torch import Tensor

from pymtl.balancers.pcgrad import TaskOrder
from pymtl.errors import OpError
from pymtl.ops import (
    gradvac_weights,
    gradvac_weights_reference,
    pcgrad_weights,
    pcgrad_weights_reference,
)
from tests.ops._helpers import run_without_extension

projection = importlib.import_module("pymtl.ops.projection")
RTOL = 1e-10


def make_J(T: int, P: int, seed: int) -> Tensor:
    return torch.randn(T, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orders_for(T: int, seed: int) -> Tensor:
    return TaskOrder(T, seed=seed).draw_tensor()


def assert_w_close(w: Tensor, expected: Tensor, rtol: float = RTOL) -> None:
    assert w.shape == expected.shape
    assert w.dtype == torch.float64
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(w.cpu(), expected.cpu(), rtol=0, atol=rtol * scale)


def projected(J: Tensor, orders: Tensor) -> Tensor:
    """PCGrad Alg. 1 on the gradient vectors: Σ_i pc_i."""
    d = torch.zeros(J.shape[1], dtype=J.dtype)
    for i, order in enumerate(orders.tolist()):
        pc = J[i].clone()
        for j in order:
            dot = pc @ J[j]
            if dot < 0:
                pc = pc - dot / (J[j] @ J[j]) * J[j]
        d += pc
    return d


def vaccinated(J: Tensor, target: Tensor, orders: Tensor, beta: float) -> Tensor:
    """GradVac (SPEC-methods §2.9) on the gradient vectors; updates ``target`` [T, T]."""
    d = torch.zeros(J.shape[1], dtype=J.dtype)
    for i, order in enumerate(orders.tolist()):
        pc = J[i].clone()
        for j in order:
            if min(pc @ pc, J[j] @ J[j]) < 1e-20:
                continue
            rho = float(pc @ J[j] / (pc.norm() * J[j].norm()))
            phi = float(target[i, j])
            if rho < phi:
                root = math.sqrt(1 - phi**2)
                step = pc.norm() * (phi * math.sqrt(1 - rho**2) - rho * root) / (J[j].norm() * root)
                pc = pc + step * J[j]
            target[i, j] = (1 - beta) * phi + beta * rho
        d += pc
    return d


# ---------------------------------------------------------------------------------------------
# PCGrad


@pytest.mark.parametrize("T", [1, 2, 3, 10, 40, 70])
def test_pcgrad_matches_reference(device: str, T: int) -> None:
    """T = 70 on CUDA runs the CPU kernel on a host copy (more than 64 tasks)."""
    J = make_J(T, T + 2, seed=T)
    G, orders = (J @ J.T).to(device), orders_for(T, seed=T).to(device)
    w = pcgrad_weights(G, orders)
    assert w.device == G.device
    assert_w_close(w, pcgrad_weights_reference(G, orders))


@pytest.mark.parametrize(("T", "P"), [(2, 3), (3, 2), (5, 8), (10, 4), (10, 20)])
def test_pcgrad_equals_sequential_projection(device: str, T: int, P: int) -> None:
    J = make_J(T, P, seed=T * P)
    orders = orders_for(T, seed=P)
    w = pcgrad_weights((J @ J.T).to(device), orders.to(device)).cpu()
    expected = projected(J, orders)
    torch.testing.assert_close(J.T @ w, expected, rtol=1e-8, atol=1e-8 * (1 + expected.abs().max()))


def test_pcgrad_spec_vectors(device: str) -> None:
    """SPEC-methods §2.18, identity order: Case A (2, 1.5) and Case B (2, 2.75, 32/21)."""
    identity = TaskOrder(3, order="identity").draw_tensor()
    G_A = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64, device=device)
    w = pcgrad_weights(G_A, torch.tensor([[1], [0]], device=device))
    torch.testing.assert_close(w.cpu(), torch.tensor([2.0, 1.5], dtype=torch.float64))
    J_B = torch.tensor([[1.0, 0, 0], [-1, 1, 0], [0.5, -2, 1]], dtype=torch.float64)
    w = pcgrad_weights((J_B @ J_B.T).to(device), identity.to(device))
    torch.testing.assert_close(w.cpu(), torch.tensor([2.0, 2.75, 32 / 21], dtype=torch.float64))


def test_zero_gradient_is_skipped(device: str) -> None:
    G = torch.tensor([[1.0, 0, -1], [0, 0, 0], [-1, 0, 2]], dtype=torch.float64, device=device)
    w = pcgrad_weights(G, TaskOrder(3, order="identity").draw_tensor().to(device)).cpu()
    assert w.tolist() == [2.0, 1.0, 1.5]


# ---------------------------------------------------------------------------------------------
# GradVac


@pytest.mark.parametrize(("K", "T"), [(1, 1), (1, 2), (3, 3), (1, 10), (4, 10), (2, 40), (1, 70)])
def test_gradvac_matches_reference(device: str, K: int, T: int) -> None:
    G = torch.stack([(lambda J: J @ J.T)(make_J(T, T + 2, seed=k)) for k in range(K)])
    g = torch.Generator().manual_seed(K * T)
    target = (torch.rand(K, T, T, generator=g, dtype=torch.float64) - 0.5).to(device)
    target_before = target.clone()
    orders = orders_for(T, seed=T).to(device)
    w, new = gradvac_weights(G.to(device), target, orders, 0.3)
    w_ref, new_ref = gradvac_weights_reference(G, target.cpu(), orders.cpu(), 0.3)
    assert w.shape == (K, T)
    assert new.shape == (K, T, T)
    assert w.device == new.device == target.device
    assert torch.equal(target, target_before), "gradvac_weights modified target"
    assert_w_close(w, w_ref)
    torch.testing.assert_close(new.cpu(), new_ref, rtol=0, atol=RTOL)


@pytest.mark.parametrize(("T", "P", "K"), [(2, 3, 1), (3, 5, 2), (5, 4, 3), (6, 12, 1)])
@pytest.mark.parametrize("beta", [0.5, 0.1, 1.0])
def test_gradvac_equals_vector_form_over_steps(
    device: str, T: int, P: int, K: int, beta: float
) -> None:
    """Three steps (the targets of step 1 steer steps 2 and 3), K groups of P columns each."""
    gen = torch.Generator().manual_seed(T * 100 + P * 10 + K)
    target = torch.zeros(K, T, T, dtype=torch.float64, device=device)
    reference = torch.zeros(K, T, T, dtype=torch.float64)
    order = TaskOrder(T, seed=P)
    for _ in range(3):
        J = torch.randn(T, K * P, generator=gen, dtype=torch.float64)
        blocks = [J[:, k * P : (k + 1) * P] for k in range(K)]
        G = torch.stack([B @ B.T for B in blocks]).to(device)
        orders = order.draw_tensor()
        w, target = gradvac_weights(G, target, orders.to(device), beta)
        for k, B in enumerate(blocks):
            expected = vaccinated(B, reference[k], orders, beta)
            scale = 1 + expected.abs().max()
            torch.testing.assert_close(B.T @ w[k].cpu(), expected, rtol=1e-8, atol=1e-8 * scale)
        torch.testing.assert_close(target.cpu(), reference, rtol=1e-9, atol=1e-9)
    assert reference.abs().sum() > 0


def test_gradvac_first_step_is_pcgrad(device: str) -> None:
    J = make_J(6, 9, seed=3)
    G, orders = (J @ J.T).to(device), orders_for(6, seed=1).to(device)
    w, _ = gradvac_weights(
        G[None], torch.zeros(1, 6, 6, dtype=torch.float64, device=device), orders, 0.5
    )
    assert_w_close(w[0], pcgrad_weights(G, orders))


def test_gradvac_guards(device: str) -> None:
    """A zero gradient: its pairs are skipped (targets untouched); |φ̂| = 1 stays finite."""
    G = torch.tensor([[1.0, 0, -1], [0, 0, 0], [-1, 0, 2]], dtype=torch.float64, device=device)
    target = torch.ones(1, 3, 3, dtype=torch.float64, device=device)
    w, new = gradvac_weights(G[None], target, TaskOrder(3).draw_tensor().to(device), 0.5)
    assert torch.isfinite(w).all()
    assert torch.equal(new[0, 1], target[0, 1])
    assert torch.equal(new[0, :, 1], target[0, :, 1])
    assert w[0, 1] == 1.0


def test_threads_do_not_change_the_result() -> None:
    """K T³ above the OpenMP threshold: 1 and 2 threads agree bit for bit."""
    K, T = 5, 40
    G = torch.stack([(lambda J: J @ J.T)(make_J(T, 50, seed=k)) for k in range(K)])
    target = torch.full((K, T, T), 0.1, dtype=torch.float64)
    orders = orders_for(T, seed=2)
    one = gradvac_weights(G, target, orders, 0.5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = gradvac_weights(G, target, orders, 0.5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0])
    assert torch.equal(one[1], two[1])


# ---------------------------------------------------------------------------------------------
# registration, errors, fallback


def test_opcheck(device: str) -> None:
    J = make_J(4, 6, seed=0)
    G, orders = (J @ J.T).to(device), orders_for(4, seed=0).to(device)
    torch.library.opcheck(torch.ops.pymtl.pcgrad_weights.default, (G, orders))
    target = torch.full((2, 4, 4), 0.2, dtype=torch.float64, device=device)
    args = (torch.stack([G, 2 * G]), target, orders, 0.5)
    torch.library.opcheck(torch.ops.pymtl.gradvac_weights.default, args)


_G = torch.eye(3, dtype=torch.float64)
_ORD = TaskOrder(3, order="identity").draw_tensor()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((_G.float(), _ORD), r"pcgrad_weights: G must be float64, got torch\.float32"),
        ((_G[:2], _ORD), r"G must be \[T, T\], got shape \(2, 3\)"),
        ((_G.numpy(), _ORD), r"G must be a torch\.Tensor \[T, T\], got ndarray"),
        ((_G, _ORD[:, :1]), r"orders must be int64 \[T, T-1\] = \[3, 2\], got .* \(3, 1\)"),
        ((_G, _ORD.int()), r"orders must be int64 .* got torch\.int32"),
        ((_G, _ORD.tolist()), r"orders must be a torch\.Tensor"),
        ((_G, torch.tensor([[1, 2], [0, 2], [0, 0]])), r"orders\[2\] must be a permutation"),
        ((_G, torch.tensor([[1, 2], [1, 2], [0, 1]])), r"orders\[1\] must be a permutation"),
        ((_G, torch.tensor([[1, 3], [0, 2], [0, 1]])), r"orders\[0\] must be a permutation"),
    ],
)
def test_pcgrad_bad_input(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(OpError, match=match):
        pcgrad_weights(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((_G, _G[None], _ORD, 0.5), r"gradvac_weights: G must be \[K, T, T\], got shape \(3, 3\)"),
        ((_G[None], _G, _ORD, 0.5), r"target must be float64 \[K, T, T\] = \[1, 3, 3\]"),
        ((_G[None], _G[None].float(), _ORD, 0.5), r"target must be float64"),
        ((_G[None], _G[None], _ORD, 1.5), r"beta must be a number in \[0, 1\], got 1\.5"),
        ((_G[None], _G[None], _ORD, True), r"beta must be a number in \[0, 1\], got True"),
        ((_G[None], _G[None], _ORD.flip(0), 0.5), r"orders\[0\] must be a permutation"),
    ],
)
def test_gradvac_bad_input(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(OpError, match=match):
        gradvac_weights(*args)  # type: ignore[arg-type]


def test_reference_path_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    J = make_J(7, 9, seed=5)
    G, orders = J @ J.T, orders_for(7, seed=5)
    target = torch.full((1, 7, 7), -0.1, dtype=torch.float64)
    kernel = pcgrad_weights(G, orders), *gradvac_weights(G[None], target, orders, 0.5)
    monkeypatch.setattr(projection, "_C", None)
    fallback = pcgrad_weights(G, orders), *gradvac_weights(G[None], target, orders, 0.5)
    for got, expected in zip(fallback, kernel, strict=True):
        assert_w_close(got, expected)


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import torch
    import pymtl._ext
    from pymtl.ops import gradvac_weights, pcgrad_weights

    assert pymtl._ext.extension is None, pymtl._ext.status()
    G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    orders = torch.tensor([[1], [0]])
    assert pcgrad_weights(G, orders).tolist() == [2.0, 1.5]
    w, target = gradvac_weights(G[None], torch.zeros(1, 2, 2, dtype=torch.float64), orders, 0.5)
    assert w.tolist() == [[2.0, 1.5]], w
    assert abs(target[0, 0, 1].item() + 0.5 ** 1.5) < 1e-12, target
    print("fallback ok")
    """
)


def test_fallback_when_extension_disabled() -> None:
    run_without_extension(_FALLBACK_SCRIPT)
