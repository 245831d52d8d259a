"""Tests of the ``combine`` op (``pymtl.ops.combine``) against ``combine_reference``.

Tolerances are derived, not tuned. The kernels sum the T products of a column in the input
precision, t ascending: a length-T dot product, whose error is at most
``γ_T Σ_t |w_t J_tp|`` with ``γ_T = T u / (1 − T u)`` (one rounding per product and per
addition, or one per fused multiply-add). When ``w`` comes in another dtype its cast to J's
dtype adds at most ``u Σ_t |w_t J_tp|``. So an entry is within ``(T + 2) u Σ_t |w_t J_tp|`` of
the exact value (u = 2^-24 for fp32, 2^-53 for fp64). The fp64 oracle adds its own
``γ_T`` for fp64 input (its products of fp32 values are exact), so fp64 gets ``2 (T + 2) u``.
"""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Iterator, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import pymtl._ext
from pymtl.errors import OpError
from pymtl.ops import combine, combine_reference
from tests.ops._helpers import (
    DTYPES,
    kernel_available,
    make_J,
    run_without_extension,
    unit_roundoff,
)

combine_module = importlib.import_module("pymtl.ops.combine")


def make_w(shape: Sequence[int], dtype: torch.dtype, device: str, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def random_bounds(K: int, P: int, seed: int) -> list[int]:
    """K + 1 strictly increasing column offsets from 0 to P (needs K <= P)."""
    g = torch.Generator().manual_seed(seed)
    inner = (torch.randperm(P - 1, generator=g)[: K - 1] + 1).sort().values.tolist()
    return [0, *inner, P]


def assert_combine_close(d: Tensor, J: Tensor, w: Tensor, bounds: Sequence[int] | None) -> None:
    """``d`` is ``Jᵀ w`` (per group) in J's dtype and on its device, within the derived bound."""
    T, P = J.shape
    assert d.shape == (P,)
    assert d.dtype == J.dtype
    assert d.device == J.device
    exact = combine_reference(J.detach().double(), w.detach().double(), bounds)
    magnitude = combine_reference(J.detach().double().abs(), w.detach().double().abs(), bounds)
    u = unit_roundoff(J.dtype)
    factor = (T + 2) if J.dtype == torch.float32 else 2 * (T + 2)
    err = (d.double() - exact).abs()
    bound = factor * u * magnitude
    bad = err > bound
    if bad.any():
        p = int(bad.nonzero()[0])
        raise AssertionError(
            f"combine {tuple(J.shape)} {J.dtype}: {int(bad.sum())} entries off; d[{p}] = "
            f"{d[p].item()!r}, exact {exact[p].item()!r}, bound {bound[p].item():.3g}"
        )


# ---------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# 31/32/33 and 63/64/65 straddle the register chunks (64 floats, 32 doubles); 2047/2049 the
# CPU blocks of 2048 columns; 10_007 many blocks with a ragged tail.
@pytest.mark.parametrize("P", [0, 1, 31, 33, 64, 65, 2047, 2049, 10_007])
@pytest.mark.parametrize("T", [1, 2, 3, 7, 40])
def test_forward_matches_reference(device: str, T: int, P: int, dtype: torch.dtype) -> None:
    J = make_J(T, P, dtype, device, seed=T * 7919 + P)
    w = make_w((T,), dtype, device, seed=P)
    J_before = J.clone()
    assert_combine_close(combine(J, w), J, w, None)
    assert torch.equal(J, J_before), "combine modified its input"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("K", "P"), [(1, 5), (2, 3), (3, 3), (4, 4100), (7, 10_007)])
def test_groups_match_reference(device: str, K: int, P: int, dtype: torch.dtype) -> None:
    """Groups of one column, groups inside a block, and boundaries across blocks."""
    T = 5
    J = make_J(T, P, dtype, device, seed=K)
    w = make_w((K, T), dtype, device, seed=K + 1)
    bounds = random_bounds(K, P, seed=K + P)
    d = combine(J, w, bounds)
    assert_combine_close(d, J, w, bounds)
    for k in range(K):  # each group is the plain combination of its own columns
        a, b = bounds[k], bounds[k + 1]
        assert_combine_close(d[a:b], J[:, a:b], w[k], None)


def test_no_rows_give_zeros(device: str) -> None:
    d = combine(torch.empty(0, 9, device=device), torch.empty(0, device=device))
    assert torch.equal(d, torch.zeros(9, device=device))


def test_one_task_is_a_scaling(device: str) -> None:
    J = make_J(1, 5000, torch.float32, device)
    assert torch.equal(combine(J, torch.ones(1, device=device)), J[0])
    w = torch.tensor([-0.25], device=device)
    assert torch.equal(combine(J, w), J[0] * -0.25)  # one exact product per entry


def test_w_is_cast_to_J(device: str) -> None:
    J = make_J(3, 1000, torch.float32, device)
    w64 = make_w((3,), torch.float64, "cpu")
    assert_combine_close(combine(J, w64), J, w64, None)
    torch.testing.assert_close(combine(J, w64.half()), combine(J, w64.half().float()))


def _layouts(T: int, P: int, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    return {
        "column_slice": make_J(T + 1, P + 100, dtype, device, seed=3)[1:, 7 : 7 + P],
        "row_step": make_J(2 * T, P, dtype, device, seed=4)[::2],
        "transposed": make_J(P, T, dtype, device, seed=5).T,
        "expanded_rows": make_J(1, P, dtype, device, seed=6).expand(T, P),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["column_slice", "row_step", "transposed", "expanded_rows"])
def test_strided_inputs(device: str, layout: str, dtype: torch.dtype) -> None:
    J = _layouts(4, 2500, dtype, device)[layout]
    w = make_w((4,), dtype, device)
    d = combine(J, w)
    assert_combine_close(d, J, w, None)
    if kernel_available(device):  # every layout is summed in the same order
        assert torch.equal(d, combine(J.contiguous(), w))


def test_column_slice_is_read_in_place() -> None:
    J = _layouts(4, 2500, torch.float32, "cpu")["column_slice"]
    J_used, ld = combine_module._row_major(J)
    assert J_used is J
    assert ld == J.stride(0)


def test_deterministic_with_threads() -> None:
    """Each column's sum has a fixed order: 1 and 2 OpenMP threads agree bit for bit."""
    J = make_J(10, 300_007, torch.float32, "cpu", seed=9)
    w = make_w((2, 10), torch.float32, "cpu")
    bounds = [0, 123_457, 300_007]
    one = combine(J, w, bounds)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = combine(J, w, bounds)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    assert_combine_close(one, J, w, bounds)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Tensor, Tensor, list[int] | None]:
    T = draw(st.integers(0, 9))
    P = draw(st.integers(1, 700))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    lead = draw(st.integers(0, 3))
    J = make_J(T, P + lead, dtype, "cpu", seed)[:, lead:]
    K = draw(st.integers(0, min(P, 6)))  # 0: a plain [T] w
    if K == 0:
        return J, make_w((T,), dtype, "cpu", seed), None
    return J, make_w((K, T), dtype, "cpu", seed), random_bounds(K, P, seed)


@settings(max_examples=60, deadline=None)
@given(case=_cases())
def test_forward_property(device: str, case: tuple[Tensor, Tensor, list[int] | None]) -> None:
    J, w, bounds = case
    J, w = J.to(device), w.to(device)
    assert_combine_close(combine(J, w, bounds), J, w, bounds)


# ---------------------------------------------------------------------------------------------
# out=


def test_out_writes_in_place(device: str) -> None:
    J = make_J(3, 5000, torch.float32, device)
    w = make_w((2, 3), torch.float32, device)
    out = torch.full((5000,), float("nan"), device=device)
    result = combine(J, w, [0, 77, 5000], out=out)
    assert result is out
    assert torch.equal(out, combine(J, w, [0, 77, 5000]))


def test_out_refuses_autograd() -> None:
    J = make_J(3, 50, torch.float32, "cpu").requires_grad_()
    with pytest.raises(OpError, match=r"out= is not differentiable"):
        combine(J, torch.ones(3), out=torch.empty(50))
    with torch.no_grad():
        combine(J, torch.ones(3), out=torch.empty(50))


# ---------------------------------------------------------------------------------------------
# backward


@pytest.mark.parametrize("bounds", [None, [0, 3, 5], [0, 1, 2, 5]], ids=["plain", "K2", "K3"])
def test_gradcheck_fp64(device: str, bounds: list[int] | None) -> None:
    T, P = 3, 5
    J = torch.randn(T, P, dtype=torch.float64, device=device, requires_grad=True)
    shape = (T,) if bounds is None else (len(bounds) - 1, T)
    w = torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda J, w: combine(J, w, bounds), (J, w))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_matches_reference(device: str, dtype: torch.dtype) -> None:
    bounds = [0, 1000, 1001, 3000]
    J = make_J(4, 3000, dtype, device).requires_grad_()
    w = make_w((3, 4), torch.float64, device).requires_grad_()  # cast inside: grad in fp64
    J_ref, w_ref = (x.detach().clone().requires_grad_() for x in (J, w))
    grad_d = make_w((3000,), dtype, device, seed=5)
    combine(J, w, bounds).backward(grad_d)
    combine_reference(J_ref, w_ref, bounds).backward(grad_d)
    assert J.grad is not None
    assert w.grad is not None
    assert J.grad.dtype == dtype
    assert w.grad.dtype == torch.float64
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(J.grad, J_ref.grad, rtol=rtol, atol=0)  # one product each
    scale = (J.detach().abs().double().T * grad_d.abs().double()[:, None]).sum()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=0, atol=3000 * rtol * float(scale))


def test_backward_through_a_column_slice(device: str) -> None:
    big = make_J(3, 300, torch.float64, device).requires_grad_()
    combine(big[:, 10:110], torch.tensor([1.0, -2.0, 0.5], device=device)).sum().backward()
    assert big.grad is not None
    expected = torch.zeros_like(big)
    expected[:, 10:110] = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64, device=device)
    assert torch.equal(big.grad, expected)


# ---------------------------------------------------------------------------------------------
# torch.library registration and torch.compile


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device: str, dtype: torch.dtype, requires_grad: bool) -> None:
    J = make_J(3, 37, dtype, device).requires_grad_(requires_grad)
    w = make_w((2, 3), dtype, device).requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.pymtl.combine.default, (J, w, [0, 20, 37]))
    if not requires_grad:
        out = torch.empty(37, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.pymtl.combine_into.default, (J, w, [0, 20, 37], out))


def _loss(J: Tensor, w: Tensor) -> Tensor:
    return combine(J, w.softmax(-1), [0, 100, 300]).tanh().pow(2).sum()


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_fullgraph(device: str) -> None:
    J = make_J(4, 300, torch.float32, device) / 4
    w = make_w((2, 4), torch.float32, device)
    explanation = torch._dynamo.explain(_loss)(J, w)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    targets = [node.target for node in explanation.graphs[0].graph.nodes]
    assert torch.ops.pymtl.combine.default in targets
    torch._dynamo.reset()

    def run(fn: object) -> tuple[Tensor, Tensor, Tensor]:
        Jl, wl = J.clone().requires_grad_(), w.clone().requires_grad_()
        out = fn(Jl, wl)  # type: ignore[operator]
        out.backward()
        return out.detach(), Jl.grad, wl.grad  # type: ignore[return-value]

    compiled = run(torch.compile(_loss, fullgraph=True))
    for got, expected in zip(compiled, run(_loss), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert compiled[2].abs().max() > 1e-3  # not a comparison of zeros


# ---------------------------------------------------------------------------------------------
# errors


_J = torch.zeros(2, 5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(5), torch.ones(5)), r"J must be 2-D \[T, P\], got shape \(5,\)"),
        ((_J.half(), torch.ones(2)), r"J must be float32 or float64, got torch\.float16"),
        (([[1.0]], torch.ones(1)), r"J must be a torch\.Tensor \[T, P\], got list"),
        ((_J, [1.0, 2.0]), r"w must be a torch\.Tensor \[T\] or \[K, T\], got list"),
        ((_J, torch.ones(2, dtype=torch.int64)), r"w must be a floating-point tensor"),
        ((_J, torch.ones(3)), r"w must have shape \[T\] = \[2\] .* got \(3,\)"),
        ((_J, torch.ones(2, 2), None), r"w must have shape \[T\] = \[2\]"),
        ((_J, torch.ones(2), [0, 5]), r"with bounds, w must have shape \[K, T\]"),
        ((_J, torch.ones(1, 3), [0, 5]), r"w must have shape \[K, T\] = \[K, 2\]"),
        ((_J, torch.ones(2, 2), [0, 5]), r"bounds must be 3 ints"),
        ((_J, torch.ones(2, 2), [0, 3, 4]), r"strictly increasing from 0 to P = 5"),
        ((_J, torch.ones(2, 2), [1, 3, 5]), r"strictly increasing from 0 to P = 5"),
        ((_J, torch.ones(2, 2), [0, 3, 3]), r"strictly increasing"),
        ((_J, torch.ones(2, 2), [0, 6, 5]), r"strictly increasing"),
        ((_J, torch.ones(2, 2), [0, True, 5]), r"bounds must be 3 ints"),
        ((_J, torch.ones(2, 2), [0, 2.5, 5]), r"bounds must be 3 ints"),
        ((_J, torch.ones(2, 2), torch.tensor([0, 2, 5])), r"convert a tensor with \.tolist"),
        ((_J, torch.ones(2, 2), "025"), r"a sequence of K \+ 1 = 3 ints"),
    ],
)
def test_bad_input_raises_op_error(args: tuple[object, ...], match: str) -> None:
    with pytest.raises(OpError, match=match) as info:
        combine(*args)  # type: ignore[arg-type]
    assert info.match(r"^combine: ")


@pytest.mark.parametrize(
    ("out", "match"),
    [
        (torch.empty(4), r"out must be \[P\] = \[5\], torch\.float32 on cpu like J, got \(4,\)"),
        (torch.empty(5, dtype=torch.float64), r"got \(5,\) torch\.float64"),
        (torch.empty(10)[::2], r"out must be contiguous"),
        ([0.0] * 5, r"out must be a torch\.Tensor \[P\], got list"),
    ],
)
def test_bad_out_raises_op_error(out: object, match: str) -> None:
    with pytest.raises(OpError, match=match):
        combine(_J, torch.ones(2), out=out)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# compiled kernel vs pure-PyTorch fallback


def test_compiled_kernel_is_used(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not kernel_available(device):
        pytest.skip(f"no compiled kernel for {device}: {pymtl._ext.status()}")
    J = make_J(5, 3000, torch.float32, device)
    w = make_w((5,), torch.float32, device)

    def no_reference(*args: object) -> Tensor:
        raise AssertionError("combine fell back to combine_reference")

    monkeypatch.setattr(combine_module, "combine_reference", no_reference)
    d = combine(J, w)
    combine(J, w, out=torch.empty_like(d))
    monkeypatch.undo()
    assert_combine_close(d, J, w, None)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reference_path(device: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(combine_module, "_C", None)
    J = make_J(4, 2049, dtype, device)[:, 1:]
    w = make_w((2, 4), dtype, device)
    d = combine(J, w, [0, 700, 2048])
    assert_combine_close(d, J, w, [0, 700, 2048])
    out = torch.empty_like(d)
    combine(J, w, [0, 700, 2048], out=out)
    assert torch.equal(out, d)


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import torch
    import pymtl._ext
    from pymtl.ops import combine

    assert pymtl._ext.extension is None, pymtl._ext.status()
    torch.manual_seed(0)
    J = torch.randn(5, 3000, dtype=torch.float64)
    for Jv in [J, J[:, 7:1000], J[::2], J.float()]:
        w = torch.randn(Jv.shape[0], dtype=torch.float64)
        d = combine(Jv, w)
        assert d.dtype == Jv.dtype, d.dtype
        exact = w @ Jv.double()
        assert ((d.double() - exact).abs() <= 1e-5 * (w.abs() @ Jv.double().abs())).all()
    w = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    Jg = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda J, w: combine(J, w, [0, 4, 9]), (Jg, w))
    print("fallback ok")
    """
)


def test_fallback_when_extension_disabled() -> None:
    run_without_extension(_FALLBACK_SCRIPT)
