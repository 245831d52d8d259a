"""Tests of the ``gram`` op (``pymtl.ops.gram``) against ``gram_reference``.

Tolerances are derived, not tuned; all are relative to ``sqrt(G_ii G_jj) = |g_i| |g_j|``, which
bounds ``sum_k |J_ik J_jk|`` (Cauchy-Schwarz) and so the error of any summation order of
``G_ij``:

* fp32: the kernels sum at most ``kGramRun = 256`` products per accumulator in fp32 (one rounded
  product and 256 rounded additions: error <= 257 u sum|x y|, u = 2^-24), add the runs in fp64
  (negligible) and round once to fp32 (<= 0.5 u |G_ij|). Worst case: 257.5 u = 1.53e-5, so
  ``FP32_TOL = 2e-5`` holds for every input, not only for random data. The fp64 oracle is exact
  to ~1e-16 here: fp32 products are exact in fp64.
* fp64: the same bound with u = 2^-53 is 3e-14; the oracle (a BLAS dgemm) adds its own error,
  typically sqrt(P) u <= 4e-14 at the sizes below. ``FP64_TOL = 1e-12``.

The large case (P = 3M) checks a much tighter, statistical bound: see its docstring.
"""

from __future__ import annotations

import importlib
import math
import textwrap
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import pymtl._ext
from pymtl.errors import OpError
from pymtl.ops import gram, gram_reference
from tests.ops._helpers import (
    DTYPES,
    kernel_available,
    make_J,
    run_without_extension,
    unit_roundoff,
)

# ``pymtl.ops.gram`` the attribute is the function (pymtl.ops re-exports it), so the module
# itself is only reachable through sys.modules / importlib.
gram_module = importlib.import_module("pymtl.ops.gram")

FP32_TOL = 2e-5
FP64_TOL = 1e-12
U32 = 2.0**-24


def _tol(dtype: torch.dtype) -> float:
    return FP32_TOL if dtype == torch.float32 else FP64_TOL


def assert_gram_close(G: Tensor, J: Tensor, tol: float | None = None) -> None:
    """``G`` is ``J Jᵀ`` in J's dtype and on its device, exactly symmetric, and within
    ``tol * sqrt(G_ii G_jj)`` of the fp64 reference, entry by entry."""
    T = J.shape[0]
    assert G.shape == (T, T)
    assert G.dtype == J.dtype
    assert G.device == J.device
    assert torch.equal(G, G.mT), "G is not exactly symmetric"
    R = gram_reference(J.detach().to(torch.float64))
    d = R.diagonal().sqrt()
    bound = (tol if tol is not None else _tol(J.dtype)) * (d[:, None] * d[None, :])
    err = (G.to(torch.float64) - R).abs()
    bad = err > bound
    if bad.any():
        i, j = (int(k) for k in bad.nonzero()[0])
        raise AssertionError(
            f"gram {tuple(J.shape)} {J.dtype}: {int(bad.sum())} entries off; G[{i},{j}] = "
            f"{G[i, j].item()!r}, reference {R[i, j].item()!r}, |err| {err[i, j].item():.3g} > "
            f"bound {bound[i, j].item():.3g}"
        )


# ---------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
# 1023/1024/1025 and 2047/2048/2049 straddle the CPU column blocks (kGramRun * lanes:
# 1024 doubles, 2048 floats); 100_003 spans many blocks and CUDA splits, with a ragged tail.
@pytest.mark.parametrize("P", [0, 1, 7, 1023, 1025, 2047, 2048, 2049, 100_003])
# T covers 1 to 16 tiles of 4 rows, full and ragged.
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 7, 13, 64])
def test_forward_matches_reference(device: str, T: int, P: int, dtype: torch.dtype) -> None:
    J = make_J(T, P, dtype, device, seed=T * 1_000_003 + P)
    J_before = J.clone()
    assert_gram_close(gram(J), J)
    assert torch.equal(J, J_before), "gram modified its input"


@pytest.mark.parametrize("T", [0, 1, 3, 5])
def test_no_columns_give_zeros(device: str, T: int) -> None:
    """P = 0 is a valid (if empty) model: every inner product is an empty sum."""
    J = torch.empty(T, 0, device=device, requires_grad=True)
    G = gram(J)
    assert torch.equal(G, torch.zeros(T, T, device=device))
    (G * torch.randn(T, T, device=device)).sum().backward()
    assert J.grad is not None
    assert J.grad.shape == (T, 0)


def test_no_rows(device: str) -> None:
    G = gram(torch.randn(0, 17, device=device))
    assert G.shape == (0, 0)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[Tensor, Tensor]:
    """A small J in some layout, and the contiguous J it equals."""
    T = draw(st.integers(0, 9))
    P = draw(st.integers(0, 700))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    layout = draw(st.sampled_from(["contiguous", "column_slice", "row_step", "transposed"]))
    if layout == "column_slice":
        lead, trail = draw(st.integers(0, 5)), draw(st.integers(0, 5))
        big = make_J(T, lead + P + trail, dtype, "cpu", seed)
        J = big[:, lead : lead + P]
    elif layout == "row_step":
        step = draw(st.integers(2, 3))
        J = make_J(T * step, P, dtype, "cpu", seed)[::step]
    elif layout == "transposed":
        J = make_J(P, T, dtype, "cpu", seed).T
    else:
        J = make_J(T, P, dtype, "cpu", seed)
    return J, J.contiguous()


@settings(max_examples=60, deadline=None)
@given(case=_cases())
def test_forward_property(device: str, case: tuple[Tensor, Tensor]) -> None:
    J, J_dense = (x.to(device) for x in case)
    G = gram(J)
    assert_gram_close(G, J_dense)
    if kernel_available(device):
        # the kernels read every layout in the same order (BLAS, the fallback, may not)
        assert torch.equal(G, gram(J_dense))


def test_fp32_large_P_more_accurate_than_matmul(device: str) -> None:
    """T=4, P=3M fp32 (G_ii ~ 3e6): short fp32 runs added in fp64 keep the error near the one
    final rounding to fp32, 0.5 u |G_ij|.

    The run sums add noise far below that: each run's fp32 error is a random walk of 256
    roundings of partial sums <= 256 (G_ii grows by ~1 per column), about u * 256^1.5 / 3, and
    the P / 256 runs add up to about u * sqrt(P) * 256 / 3 ~ 0.05 u sqrt(G_ii G_jj). We assert
    4 u sqrt(G_ii G_jj) (measured: 0.35); a single fp32 accumulator per entry (or summing the
    runs in fp32) would be off by ~1e3 u. Also asserts that gram is no less accurate than
    ``J @ J.T`` in fp32 (measured: ~6e3 u on the CPU).
    """
    J = make_J(4, 3_000_000, torch.float32, device, seed=7)
    G = gram(J)
    assert_gram_close(G, J, tol=4 * U32)
    R = gram_reference(J.to(torch.float64))
    err_gram = (G.to(torch.float64) - R).abs().max().item()
    err_mm = ((J @ J.T).to(torch.float64) - R).abs().max().item()
    slack = U32 * R.diagonal().max().item()  # one fp32 ulp at the diagonal's magnitude
    assert err_gram <= err_mm + slack, (err_gram, err_mm)


def _layouts(T: int, P: int, dtype: torch.dtype, device: str) -> dict[str, Tensor]:
    big = make_J(T + 1, P + 1000, dtype, device, seed=3)
    rows = make_J(2 * T, P, dtype, device, seed=4)
    return {
        # a view into the middle of a wider matrix, with a storage offset: read in place
        "column_slice": big[1:, 5 : 5 + P],
        # every other row: row stride 2P, read in place
        "row_step": rows[::2],
        # [P, T] contiguous, seen as [T, P]: unit row stride, copied once
        "transposed": make_J(P, T, dtype, device, seed=5).T,
        # one row repeated (row stride 0) and one column repeated (column stride 0)
        "expanded_rows": make_J(1, P, dtype, device, seed=6).expand(T, P),
        "expanded_cols": make_J(T, 1, dtype, device, seed=7).expand(T, P),
        # [1, T] seen as a single column [T, 1] with strides (1, T)
        "single_column": make_J(1, T, dtype, device, seed=8).T,
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "layout",
    ["column_slice", "row_step", "transposed", "expanded_rows", "expanded_cols", "single_column"],
)
def test_strided_inputs(device: str, layout: str, dtype: torch.dtype) -> None:
    J = _layouts(5, 2500, dtype, device)[layout]
    assert layout == "single_column" or not J.is_contiguous()  # torch calls [T, 1] contiguous
    assert_gram_close(gram(J), J)


@pytest.mark.parametrize("layout", ["column_slice", "row_step", "single_column"])
def test_row_strided_views_are_read_in_place(layout: str) -> None:
    """The documented promise: rows with unit column stride are not copied."""
    J = _layouts(5, 2500, torch.float32, "cpu")[layout]
    J_used, ld = gram_module._row_major(J)
    assert J_used is J
    assert ld == J.stride(0)


@pytest.mark.parametrize("layout", ["transposed", "expanded_rows", "expanded_cols"])
def test_other_layouts_are_copied(layout: str) -> None:
    J = _layouts(5, 2500, torch.float32, "cpu")[layout]
    J_used, ld = gram_module._row_major(J)
    assert J_used.is_contiguous()
    assert ld == J.shape[1]


def test_symmetric_and_deterministic_with_threads() -> None:
    """Two OpenMP threads (the session default is one): per-thread partial sums, added in a
    fixed order, so the result is exactly symmetric and the same on every call."""
    J = make_J(13, 300_007, torch.float32, "cpu", seed=9)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        G = gram(J)
        again = gram(J)
    finally:
        torch.set_num_threads(before)
    assert_gram_close(G, J)
    assert torch.equal(G, again)


# ---------------------------------------------------------------------------------------------
# backward


def _matvec_bound(A: Tensor, J: Tensor, dtype: torch.dtype) -> Tensor:
    """Error bound of ``A @ J`` summed over T terms in ``dtype``: gamma_T |A| |J| (+1 ulp)."""
    u = unit_roundoff(dtype)
    return (A.shape[1] + 1) * u * (A.abs() @ J.abs())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("T", "P"), [(1, 5), (3, 2049), (7, 1000), (64, 300)])
def test_backward_matches_reference(device: str, T: int, P: int, dtype: torch.dtype) -> None:
    W = torch.randn(T, T, dtype=dtype, device=device)  # not symmetric: both terms matter
    J = make_J(T, P, dtype, device).requires_grad_()
    J_ref = J.detach().clone().requires_grad_()
    (gram(J) * W).sum().backward()
    (gram_reference(J_ref) * W).sum().backward()
    assert J.grad is not None
    assert J_ref.grad is not None
    assert J.grad.dtype == dtype
    A = (W + W.mT).to(torch.float64)
    J64 = J.detach().to(torch.float64)
    exact = A @ J64
    bound = 2 * _matvec_bound(A, J64, dtype)  # covers both the op's and the reference's rounding
    assert ((J.grad.to(torch.float64) - exact).abs() <= bound).all()
    assert ((J_ref.grad.to(torch.float64) - exact).abs() <= bound).all()


def test_backward_through_a_column_slice(device: str) -> None:
    """A view read in place still sends its gradient to the right columns of its base."""
    big = make_J(4, 300, torch.float64, device).requires_grad_()
    gram(big[:, 10:110]).sum().backward()
    assert big.grad is not None
    expected = torch.zeros_like(big)
    expected[:, 10:110] = 2 * big.detach()[:, 10:110].sum(0, keepdim=True)  # (1 + 1ᵀ) J
    torch.testing.assert_close(big.grad, expected, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize(("T", "P"), [(1, 1), (3, 5), (5, 9)])
def test_gradcheck_fp64(device: str, T: int, P: int) -> None:
    J = torch.randn(T, P, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(gram, (J,))
    # the backward, (Ḡ + Ḡᵀ) J, is made of differentiable ops: double backward works too
    assert torch.autograd.gradgradcheck(gram, (J,))


# ---------------------------------------------------------------------------------------------
# torch.library registration and torch.compile


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device: str, dtype: torch.dtype, requires_grad: bool) -> None:
    J = make_J(3, 37, dtype, device).requires_grad_(requires_grad)
    # schema, fake tensor, autograd registration and aot_dispatch_dynamic
    torch.library.opcheck(torch.ops.pymtl.gram.default, (J,))


def _softmax_of_gram(J: Tensor) -> Tensor:
    return (gram(J) * 2).softmax(-1).sum(0).pow(2).sum()


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _forward_backward(fn: Callable[[Tensor], Tensor], J: Tensor) -> tuple[Tensor, Tensor]:
    leaf = J.detach().clone().requires_grad_()
    out = fn(leaf)
    out.backward()
    assert leaf.grad is not None
    return out.detach(), leaf.grad


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_fullgraph(device: str) -> None:
    J = make_J(5, 300, torch.float32, device) / 30  # G_ij of order 1: the softmax is not flat
    explanation = torch._dynamo.explain(_softmax_of_gram)(J)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    targets = [node.target for node in explanation.graphs[0].graph.nodes]
    assert torch.ops.pymtl.gram.default in targets  # the op itself, not a decomposition
    torch._dynamo.reset()

    compiled = torch.compile(_softmax_of_gram, fullgraph=True)
    out, grad = _forward_backward(compiled, J)
    out_eager, grad_eager = _forward_backward(_softmax_of_gram, J)
    torch.testing.assert_close(out, out_eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_eager, rtol=1e-4, atol=1e-6)
    assert grad.abs().max() > 1e-3  # the comparison is not between two zeros


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_dynamic_shapes() -> None:
    """One compiled graph serves several (T, P): the fake kernel's symbolic [T, T] output."""
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(_softmax_of_gram, fullgraph=True, dynamic=True, backend=counter)
    for T, P in [(3, 50), (6, 77), (4, 2049)]:
        J = make_J(T, P, torch.float64, "cpu") / math.sqrt(P)
        out, grad = _forward_backward(compiled, J)
        out_eager, grad_eager = _forward_backward(_softmax_of_gram, J)
        torch.testing.assert_close(out, out_eager, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, grad_eager, rtol=1e-10, atol=1e-12)
    assert counter.frame_count == 1


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("J", "match"),
    [
        (torch.zeros(5), r"2-D \[T, P\] .*got shape \(5,\)"),
        (torch.zeros(2, 3, 4), r"2-D \[T, P\] .*got shape \(2, 3, 4\)"),
        (torch.zeros(()), r"2-D \[T, P\] .*got shape \(\)"),
        (torch.zeros(2, 3, dtype=torch.float16), r"float32 or float64, got torch\.float16"),
        (torch.zeros(2, 3, dtype=torch.int64), r"float32 or float64, got torch\.int64"),
        (torch.zeros(2, 3, dtype=torch.complex64), r"float32 or float64, got torch\.complex64"),
        ([[1.0, 2.0], [3.0, 4.0]], r"must be a torch\.Tensor \[T, P\], got list"),
        (np.ones((2, 3)), r"must be a torch\.Tensor \[T, P\], got ndarray"),
    ],
    ids=["1-D", "3-D", "0-D", "float16", "int64", "complex64", "list", "ndarray"],
)
def test_bad_input_raises_op_error(J: object, match: str) -> None:
    with pytest.raises(OpError, match=match) as info:
        gram(J)  # type: ignore[arg-type]
    assert info.match(r"^gram: J must be")  # says which op and which argument
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------
# compiled kernel vs pure-PyTorch fallback


def test_compiled_kernel_is_used(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not kernel_available(device):
        pytest.skip(f"no compiled kernel for {device}: {pymtl._ext.status()}")
    J32 = make_J(5, 3000, torch.float32, device)
    J64 = make_J(5, 3000, torch.float64, device)

    def no_reference(J: Tensor) -> Tensor:
        raise AssertionError("gram fell back to gram_reference")

    monkeypatch.setattr(gram_module, "gram_reference", no_reference)
    G32, G64 = gram(J32), gram(J64)
    monkeypatch.undo()
    assert_gram_close(G32, J32)
    assert_gram_close(G64, J64)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("T", "P"), [(1, 0), (3, 1), (5, 2049), (13, 10_001)])
def test_reference_path(
    device: str, T: int, P: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branch taken without a compiled extension (or on other devices) keeps the same
    contract, exact symmetry included, and the same autograd."""
    monkeypatch.setattr(gram_module, "_C", None)
    J = make_J(T, P, dtype, device).requires_grad_()
    G = gram(J)
    assert_gram_close(G, J)
    W = torch.randn(T, T, dtype=dtype, device=device)
    (G * W).sum().backward()
    assert J.grad is not None
    A, J64 = (W + W.mT).to(torch.float64), J.detach().to(torch.float64)
    assert ((J.grad.to(torch.float64) - A @ J64).abs() <= _matvec_bound(A, J64, dtype)).all()


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import torch
    import pymtl._ext
    from pymtl.ops import gram

    assert pymtl._ext.extension is None, pymtl._ext.status()
    assert "disabled by PYMTL_DISABLE_EXT" in pymtl._ext.status(), pymtl._ext.status()

    torch.manual_seed(0)
    big = torch.randn(6, 3000, dtype=torch.float64)
    for J in [big, big[:, 5:1000], big[::2], big.T.contiguous().T, big[:, :0], big.float()]:
        R = J.double() @ J.double().T
        G = gram(J)
        assert G.dtype == J.dtype, G.dtype
        assert torch.equal(G, G.T), "not exactly symmetric"
        d = R.diagonal().sqrt()
        assert ((G.double() - R).abs() <= 2e-5 * d[:, None] * d[None, :]).all()

    J = torch.randn(4, 50, dtype=torch.float64, requires_grad=True)
    W = torch.randn(4, 4, dtype=torch.float64)
    (gram(J) * W).sum().backward()
    torch.testing.assert_close(J.grad, (W + W.T) @ J.detach())
    assert torch.autograd.gradcheck(gram, (torch.randn(3, 5, dtype=torch.float64,
                                                       requires_grad=True),))
    print("fallback ok")
    """
)


def test_fallback_when_extension_disabled() -> None:
    """``PYMTL_DISABLE_EXT=1``: no compiled module is loaded and gram is the reference."""
    run_without_extension(_FALLBACK_SCRIPT)
