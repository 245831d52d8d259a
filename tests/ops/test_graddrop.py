"""Tests of the GradDrop ops (``pymtl.ops.graddrop``) against their references.

Tolerances are derived. ``S[t, n]`` sums B exact terms ``±J[t, b, n]`` in the input precision:
error at most ``γ_B Σ_b |J[t, b, n]|``. ``d[b, n]`` sums T products ``coef · J`` whose
coefficients the kernels and the reference compute with the same formula in the same dtype:
error at most ``γ_T Σ_t coef_t |J_t|``; the fp64 oracle evaluates the coefficients in fp64,
which moves them by at most u, so fp32 gets ``(T + 2) u``. For fp64 inputs the oracle's own
rounding is as large as the op's: ``2 (B + 1) u`` and ``2 (T + 2) u``.

The mask compares the purity P with u: where they agree to rounding, the kernels and the
reference may decide differently, so random tests move u at least 1e-4 away from P (P is
exact to ~T u ≈ 1e-6 in fp32). The ties themselves are tested on exact values by hand.
"""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import pymtl._ext
from pymtl.errors import OpError
from pymtl.ops import (
    graddrop,
    graddrop_combine,
    graddrop_combine_reference,
    graddrop_signed_sum,
    graddrop_signed_sum_reference,
)
from tests.ops._helpers import DTYPES, kernel_available, run_without_extension, unit_roundoff

graddrop_module = importlib.import_module("pymtl.ops.graddrop")


def make_inputs(
    T: int, B: int, N: int, dtype: torch.dtype, device: str, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """J [T, B, N] with per-task scales, z [B, N] with about 10% exact zeros."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(T, B, N, generator=g, dtype=torch.float64)
    J *= 2.0 ** torch.randint(-3, 4, (T, 1, 1), generator=g).to(torch.float64)
    z = torch.randn(B, N, generator=g, dtype=torch.float64)
    z[torch.rand(B, N, generator=g) < 0.1] = 0.0
    return J.to(dtype=dtype, device=device), z.to(dtype=dtype, device=device)


def away_from_purity(S: Tensor, seed: int, gap: float = 1e-4) -> Tensor:
    """u ~ uniform(0, 1), moved at least ``gap`` away from the purity of S (computed in fp64)."""
    S64 = S.double().cpu()
    purity = 0.5 * (1 + S64.sum(0) / (S64.abs().sum(0) + 1e-7))
    u = torch.rand(S.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    close = (u - purity).abs() < gap
    u[close] = torch.where(purity[close] > 0.5, purity[close] - 2 * gap, purity[close] + 2 * gap)
    return u.to(dtype=S.dtype, device=S.device)


def assert_signed_sum_close(S: Tensor, J: Tensor, z: Tensor) -> None:
    T, B, N = J.shape
    assert S.shape == (T, N)
    assert S.dtype == J.dtype
    assert S.device == J.device
    exact = graddrop_signed_sum_reference(J.double(), z.double())
    bound = (B + 1) * unit_roundoff(J.dtype) * J.double().abs().sum(1)
    if J.dtype == torch.float64:
        bound *= 2
    assert ((S.double() - exact).abs() <= bound).all(), (S.double() - exact).abs().max()


def assert_combine_close(d: Tensor, J: Tensor, S: Tensor, u: Tensor, leak: float) -> None:
    T, B, N = J.shape
    assert d.shape == (B, N)
    assert d.dtype == J.dtype
    assert d.device == J.device
    exact = graddrop_combine_reference(J.double(), S.double(), u.double(), leak)
    magnitude = graddrop_combine_reference(J.double().abs(), S.double(), u.double(), leak)
    bound = (T + 2) * unit_roundoff(J.dtype) * magnitude * (2 if J.dtype == torch.float64 else 1)
    assert ((d.double() - exact).abs() <= bound).all(), (d.double() - exact).abs().max()


# ---------------------------------------------------------------------------------------------
# against the references


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("T", "B", "N"), [(1, 1, 1), (2, 3, 7), (3, 4, 1023), (6, 2, 1025), (4, 1, 3001), (5, 4, 2049)]
)
@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_matches_reference(
    device: str, T: int, B: int, N: int, dtype: torch.dtype, leak: float
) -> None:
    J, z = make_inputs(T, B, N, dtype, device, seed=T * 100 + B * 10 + N)
    J_before, z_before = J.clone(), z.clone()
    S = graddrop_signed_sum(J, z)
    assert_signed_sum_close(S, J, z)
    S_ref = graddrop_signed_sum_reference(J, z)
    u = away_from_purity(S_ref, seed=N)
    d = graddrop_combine(J, S_ref, u, leak)
    assert_combine_close(d, J, S_ref, u, leak)
    assert torch.equal(J, J_before)
    assert torch.equal(z, z_before)


def test_convenience_chains_the_two(device: str) -> None:
    J, z = make_inputs(3, 4, 500, torch.float32, device, seed=1)
    u = away_from_purity(graddrop_signed_sum(J, z), seed=2)
    expected = graddrop_combine(J, graddrop_signed_sum(J, z), u, 0.2)
    assert torch.equal(graddrop(J, z, u, 0.2), expected)


# ---------------------------------------------------------------------------------------------
# the mask, by hand


def _hand_case(device: str) -> tuple[Tensor, Tensor]:
    """T = 2, B = 1, N = 4. Columns: z > 0 (S = (2, -1)), z < 0 (S = (-3, -3)), z = 0
    (S = (0, 0)), z > 0 with S = (2, -2) (purity exactly ½)."""
    J = torch.tensor([[[2.0, 3.0, 5.0, 2.0]], [[-1.0, 3.0, 4.0, -2.0]]], device=device)
    z = torch.tensor([[1.0, -2.0, 0.0, 0.5]], device=device)
    return J, z


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hand_computed_mask(device: str, dtype: torch.dtype) -> None:
    J, z = (x.to(dtype) for x in _hand_case(device))
    S = graddrop_signed_sum(J, z)
    assert S.tolist() == [[2.0, -3.0, 0.0, 2.0], [-1.0, -3.0, 0.0, -2.0]]
    # purity: 0.5 (1 + 1/3) = 2/3 > 0.5 keeps the positive S (task 0); ≈ 0 < 0.25 keeps
    # both negative S; S = 0 is dropped whatever u is; P = 0.5 = u is a tie: both dropped.
    u = torch.tensor([0.5, 0.25, 0.5, 0.5], dtype=dtype, device=device)
    assert graddrop_combine(J, S, u, 0.0).tolist() == [[2.0, 6.0, 0.0, 0.0]]
    # just below / above the tie: P > u keeps task 0 (+2), P < u keeps task 1 (-2)
    u[3] = 0.4999
    assert graddrop_combine(J, S, u, 0.0)[0, 3].item() == 2.0
    u[3] = 0.5001
    assert graddrop_combine(J, S, u, 0.0)[0, 3].item() == -2.0
    # leak 0.5: kept terms weigh 1, dropped ones 0.5 (u = 0.5001 in the last column)
    d = graddrop_combine(J, S, u, 0.5)
    assert d.tolist() == [[2.0 - 0.5, 6.0, 4.5, 0.5 * 2.0 - 2.0]]
    assert torch.equal(graddrop_combine_reference(J, S, u, 0.5), d)


def test_leak_one_is_the_plain_sum(device: str) -> None:
    """ℓ = 1: every coefficient is exactly 1, so d is Σ_t J_t: summed in task order by the
    kernels, and as ``J.sum(0)`` by the reference."""
    J, z = make_inputs(5, 3, 2001, torch.float32, device, seed=4)
    S = graddrop_signed_sum(J, z)
    d = graddrop_combine(J, S, torch.rand(2001, device=device), 1.0)
    if kernel_available(device):
        expected = J[0].clone()
        for t in range(1, 5):
            expected += J[t]
    else:
        expected = J.sum(0)
    assert torch.equal(d, expected)


def test_zero_activations_drop_everything(device: str) -> None:
    """sign(0) = 0: with z = 0 in a column S is 0 there, and ℓ = 0 drops the column."""
    J, z = make_inputs(3, 2, 300, torch.float64, device, seed=5)
    z[:, :100] = 0.0
    S = graddrop_signed_sum(J, z)
    assert torch.equal(S[:, :100], torch.zeros(3, 100, dtype=torch.float64, device=device))
    d = graddrop_combine(J, S, torch.rand(300, dtype=torch.float64, device=device), 0.0)
    assert torch.equal(d[:, :100], torch.zeros(2, 100, dtype=torch.float64, device=device))
    assert_signed_sum_close(S, J, z)


def test_threads_do_not_change_the_result() -> None:
    J, z = make_inputs(6, 8, 20_001, torch.float32, "cpu", seed=6)
    u = torch.rand(20_001)
    one = graddrop(J, z, u, 0.1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = graddrop(J, z, u, 0.1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


# ---------------------------------------------------------------------------------------------
# registration and torch.compile


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(device: str, dtype: torch.dtype) -> None:
    J, z = make_inputs(3, 2, 37, dtype, device)
    torch.library.opcheck(torch.ops.pymtl.graddrop_signed_sum.default, (J, z))
    S = graddrop_signed_sum(J, z)
    u = away_from_purity(S, seed=0)
    torch.library.opcheck(torch.ops.pymtl.graddrop_combine.default, (J, S, u, 0.25))


def _step(J: Tensor, z: Tensor, u: Tensor) -> Tensor:
    return graddrop(J * 2, z.tanh(), u, 0.1).sum(0)


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_fullgraph(device: str) -> None:
    J, z = make_inputs(3, 4, 200, torch.float32, device, seed=8)
    u = away_from_purity(graddrop_signed_sum(J * 2, z.tanh()), seed=9)
    explanation = torch._dynamo.explain(_step)(J, z, u)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    targets = {node.target for node in explanation.graphs[0].graph.nodes}
    assert torch.ops.pymtl.graddrop_signed_sum.default in targets
    assert torch.ops.pymtl.graddrop_combine.default in targets
    torch._dynamo.reset()
    compiled = torch.compile(_step, fullgraph=True)(J, z, u)
    torch.testing.assert_close(compiled, _step(J, z, u), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# errors


_J = torch.zeros(2, 3, 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: graddrop_signed_sum(torch.zeros(2, 3), torch.zeros(3)), r"J must be 3-D"),
        (lambda: graddrop_signed_sum(_J.half(), torch.zeros(3, 4)), r"float32 or float64"),
        (lambda: graddrop_signed_sum(_J.tolist(), torch.zeros(3, 4)), r"must be a torch"),
        (lambda: graddrop_signed_sum(_J, torch.zeros(4, 3)), r"z must have shape \[3, 4\]"),
        (lambda: graddrop_signed_sum(_J, torch.zeros(3, 4).double()), r"z must be torch\.float32"),
        (lambda: graddrop_combine(_J, torch.zeros(2, 3), torch.zeros(4)), r"S must have shape"),
        (lambda: graddrop_combine(_J, torch.zeros(2, 4), torch.zeros(3)), r"u must be a float"),
        (
            lambda: graddrop_combine(_J, torch.zeros(2, 4), torch.zeros(4, dtype=torch.int64)),
            r"u must be a floating-point tensor \[N\] = \[4\], got torch\.int64",
        ),
        (lambda: graddrop_combine(_J, torch.zeros(2, 4), torch.zeros(4), 1.5), r"leak must be"),
        (lambda: graddrop_combine(_J, torch.zeros(2, 4), torch.zeros(4), -0.1), r"leak must be"),
        (lambda: graddrop_combine(_J, torch.zeros(2, 4), torch.zeros(4), True), r"leak must be"),
    ],
)
def test_bad_input_raises_op_error(call: object, match: str) -> None:
    with pytest.raises(OpError, match=match) as info:
        call()  # type: ignore[operator]
    assert info.match(r"^graddrop_(signed_sum|combine): ")


# ---------------------------------------------------------------------------------------------
# compiled kernel vs pure-PyTorch fallback


def test_compiled_kernel_is_used(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not kernel_available(device):
        pytest.skip(f"no compiled kernel for {device}: {pymtl._ext.status()}")
    J, z = make_inputs(4, 3, 999, torch.float32, device)
    u = torch.rand(999, device=device)

    def no_reference(*args: object) -> Tensor:
        raise AssertionError("graddrop fell back to its reference")

    monkeypatch.setattr(graddrop_module, "graddrop_signed_sum_reference", no_reference)
    monkeypatch.setattr(graddrop_module, "graddrop_combine_reference", no_reference)
    S = graddrop_signed_sum(J, z)
    graddrop_combine(J, S, u, 0.0)


def test_reference_path(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    J, z = make_inputs(4, 3, 999, torch.float64, device, seed=3)
    u = away_from_purity(graddrop_signed_sum(J, z), seed=3)
    kernel = graddrop_signed_sum(J, z), graddrop(J, z, u, 0.2)
    monkeypatch.setattr(graddrop_module, "_C", None)
    S, d = graddrop_signed_sum(J, z), graddrop(J, z, u, 0.2)
    assert_signed_sum_close(S, J, z)
    torch.testing.assert_close(S, kernel[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(d, kernel[1], rtol=1e-13, atol=1e-13)


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import torch
    import pymtl._ext
    from pymtl.ops import graddrop, graddrop_signed_sum

    assert pymtl._ext.extension is None, pymtl._ext.status()
    J = torch.tensor([[[2.0, 3.0, 5.0, 2.0]], [[-1.0, 3.0, 4.0, -2.0]]])
    z = torch.tensor([[1.0, -2.0, 0.0, 0.5]])
    assert graddrop_signed_sum(J, z).tolist() == [[2.0, -3.0, 0.0, 2.0], [-1.0, -3.0, 0.0, -2.0]]
    u = torch.tensor([0.5, 0.25, 0.5, 0.5])
    assert graddrop(J, z, u, 0.0).tolist() == [[2.0, 6.0, 0.0, 0.0]]
    print("fallback ok")
    """
)


def test_fallback_when_extension_disabled() -> None:
    run_without_extension(_FALLBACK_SCRIPT)
