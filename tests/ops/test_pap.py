"""Tests of ``pap_diffuse`` and ``pap_attention`` (``pymtl.ops.pap``) against
``pap_diffuse_reference`` (the materialised SPEC equations) and a direct softmax attention.

Tolerances are derived, not tuned. Every output here is a sum of at most K = N·(C' + T·C)
rounded products per step, and a length-K sum in precision u is within ``γ_K ≈ K u`` of exact
relative to the sum of magnitudes, which the inputs below keep O(1) per row (softmax rows sum
to 1, features are O(1)). So for fp64 (u = 1.1e-16, K < 10⁴) errors stay below ~1e-12 of the
largest entry and ``FP64_RTOL = 1e-10`` leaves a margin for the exp/log; for fp32 against the
fp64 oracle ``FP32_RTOL = 1e-4`` (K u ≈ 7e-4 worst case; random data sits near √K u).
``cosine_sum`` divides by column sums that can be near zero (SPEC flag), so its inputs get a
positive mean, which keeps every column sum near N and the problem well conditioned.
"""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

import pymtl._ext
from pymtl.errors import OpError
from pymtl.ops import pap_attention, pap_diffuse, pap_diffuse_reference
from tests.ops._helpers import kernel_available, run_without_extension

pap_module = importlib.import_module("pymtl.ops.pap")

NORMS = ["softmax", "cosine_sum", "linear_relu"]
FP64_RTOL = 1e-10
FP32_RTOL = 1e-4
Inputs = tuple[Tensor, Tensor, Tensor]


def make_inputs(
    shape: tuple[int, int, int, int, int], norm: str, dtype: torch.dtype, device: str, seed: int
) -> Inputs:
    """(f [B, T, N, C'], x [B, T, N, C], alpha_logits [T, T]) drawn on the CPU in fp64."""
    B, T, N, Cq, C = shape
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, T, N, Cq, generator=g, dtype=torch.float64)
    if norm == "cosine_sum":
        f += 2.0  # column sums near N: well conditioned
    x = torch.randn(B, T, N, C, generator=g, dtype=torch.float64)
    theta = torch.randn(T, T, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype=dtype, device=device) for t in (f, x, theta))  # type: ignore[return-value]


def assert_close_rel(got: Tensor, want: Tensor, rtol: float, what: str) -> None:
    """``|got − want| <= rtol · max(max|want|, 1)`` entry by entry (the γ_K bound above; the
    floor of 1 is the size of the terms that cancel in a gradient that is exactly 0, e.g. N = 1)."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(want.abs().max().item(), 1.0)
    err = (got.double() - want.double()).abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:g} · {scale:.3g}"


def value_and_grads(
    fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], **kw: object
) -> list[Tensor]:
    """``[y, dy/df, dy/dx, dy/dθ]`` for the loss ⟨y, w⟩ with a fixed random w."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves, **kw)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = torch.autograd.grad((y * w.to(y)).sum(), leaves)
    return [y.detach(), *grads]


# ---------------------------------------------------------------------------------------------
# pap_diffuse against the materialised reference

SHAPES = [  # (B, T, N, C', C), steps
    pytest.param((2, 3, 70, 5, 7), 1, id="T3-N70-steps1"),
    pytest.param((1, 3, 130, 8, 6), 3, id="T3-N130-steps3"),
    pytest.param((2, 1, 65, 4, 4), 1, id="T1-N65"),
    pytest.param((1, 2, 1, 3, 2), 3, id="N1-steps3"),
    pytest.param((1, 2, 64, 16, 16), 2, id="N64-block"),
]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("shape", "steps"), SHAPES)
def test_diffuse_matches_reference(
    device: str, norm: str, shape: tuple[int, int, int, int, int], steps: int
) -> None:
    inputs = make_inputs(shape, norm, torch.float64, device, seed=sum(shape) + steps)
    kw = {"beta": 0.3, "steps": steps, "norm": norm}
    got = value_and_grads(pap_diffuse, inputs, **kw)
    want = value_and_grads(pap_diffuse_reference, inputs, **kw)
    for name, a, b in zip(["y", "df", "dx", "dtheta"], got, want, strict=True):
        assert a.dtype == torch.float64
        assert_close_rel(a, b, FP64_RTOL, f"{norm} {name}")


@pytest.mark.parametrize("norm", NORMS)
def test_beta_zero_is_identity(device: str, norm: str) -> None:
    f, x, theta = make_inputs((1, 2, 9, 3, 4), norm, torch.float64, device, seed=1)
    assert torch.equal(pap_diffuse(f, x, theta, beta=0.0, norm=norm), x)


def test_diffusion_propagates_across_tasks(device: str) -> None:
    """A target j with α concentrated on source i diffuses along A_i, not its own A_j."""
    f, x, _ = make_inputs((1, 2, 20, 4, 3), "softmax", torch.float64, device, seed=2)
    theta = torch.tensor([[-50.0, 50.0], [50.0, -50.0]], dtype=torch.float64, device=device)
    y = pap_diffuse(f, x, theta, beta=1.0)  # target 0 uses A_1, target 1 uses A_0
    A = torch.softmax(f @ f.mT / 2.0, dim=-1)  # τ = 1/√4
    torch.testing.assert_close(y[:, 0], A[:, 1] @ x[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, 1], A[:, 0] @ x[:, 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_fp32_against_fp64_reference(device: str, norm: str) -> None:
    inputs = make_inputs((2, 3, 300, 32, 16), norm, torch.float64, device, seed=3)
    want = value_and_grads(pap_diffuse_reference, inputs, steps=2, norm=norm)
    got = value_and_grads(pap_diffuse, tuple(t.float() for t in inputs), steps=2, norm=norm)
    for name, a, b in zip(["y", "df", "dx", "dtheta"], got, want, strict=True):
        assert a.dtype == torch.float32
        assert_close_rel(a, b, FP32_RTOL, f"{norm} {name}")


@pytest.mark.parametrize("norm", NORMS)
def test_gradcheck_fp64(device: str, norm: str) -> None:
    f, x, theta = (
        t.requires_grad_() for t in make_inputs((1, 2, 6, 3, 2), norm, torch.float64, device, 4)
    )

    def fn(f: Tensor, x: Tensor, theta: Tensor) -> Tensor:
        return pap_diffuse(f, x, theta, beta=0.5, steps=2, norm=norm)

    assert torch.autograd.gradcheck(fn, (f, x, theta))


# ---------------------------------------------------------------------------------------------
# pap_attention


def attention_direct(f: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    logits = scale * (f @ f.mT)
    return torch.softmax(logits, dim=-1) @ v[:, None], torch.logsumexp(logits, dim=-1)


@pytest.mark.parametrize("scale", [None, 0.7])
@pytest.mark.parametrize(("B", "T", "N", "Cq", "Cv"), [(2, 3, 70, 5, 21), (1, 2, 129, 64, 96)])
def test_attention_matches_direct(
    device: str, B: int, T: int, N: int, Cq: int, Cv: int, scale: float | None
) -> None:
    """Output, lse and the gradients of a loss that uses both (lse's own gradient included)."""
    g = torch.Generator().manual_seed(N)
    f = torch.randn(B, T, N, Cq, generator=g, dtype=torch.float64).to(device).requires_grad_()
    v = torch.randn(B, N, Cv, generator=g, dtype=torch.float64).to(device).requires_grad_()
    wo, wl = torch.randn(B, T, N, Cv, generator=g), torch.randn(B, T, N, generator=g)
    tau = Cq**-0.5 if scale is None else scale
    results = []
    for o, lse in (pap_attention(f, v, scale), attention_direct(f, v, tau)):
        loss = (o * wo.to(o)).sum() + (lse * wl.to(lse)).sum()
        results.append([o.detach(), lse.detach(), *torch.autograd.grad(loss, (f, v))])
    for name, a, b in zip(["o", "lse", "df", "dv"], *results, strict=True):
        assert_close_rel(a, b, FP64_RTOL, name)


@pytest.mark.parametrize("only", ["o", "lse"])
def test_attention_gradcheck_fp64(device: str, only: str) -> None:
    f = torch.randn(2, 2, 7, 3, dtype=torch.float64, device=device, requires_grad=True)
    v = torch.randn(2, 7, 4, dtype=torch.float64, device=device, requires_grad=True)
    index = 0 if only == "o" else 1
    assert torch.autograd.gradcheck(lambda f, v: pap_attention(f, v)[index], (f, v))


@pytest.mark.parametrize("level", ["avx512", "avx2", "base"])
def test_cpu_instruction_sets(level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each instruction-set instantiation of the CPU kernels (capped by PYMTL_PAP_CPU_ISA; a
    level the CPU lacks falls back to a lower one), with ragged tiles in every dimension."""
    if not kernel_available("cpu"):
        pytest.skip(f"no compiled kernel: {pymtl._ext.status()}")
    monkeypatch.setenv("PYMTL_PAP_CPU_ISA", level)
    for dtype, rtol in [(torch.float64, FP64_RTOL), (torch.float32, FP32_RTOL)]:
        inputs = make_inputs((1, 2, 131, 37, 53), "softmax", torch.float64, "cpu", seed=6)
        want = value_and_grads(pap_diffuse_reference, inputs, beta=0.5)
        got = value_and_grads(pap_diffuse, tuple(t.to(dtype) for t in inputs), beta=0.5)
        for name, a, b in zip(["y", "df", "dx", "dtheta"], got, want, strict=True):
            assert_close_rel(a, b, rtol, f"{level} {dtype} {name}")


def test_backward_phases_over_threads() -> None:
    """Two threads: the backward cuts the 5 blocks of N = 300 into 5 groups and runs them in
    5 phases of conflict-free (query group, key group) tasks; the same on one thread (4 ragged
    groups) and against the reference."""
    inputs = make_inputs((1, 2, 300, 8, 5), "softmax", torch.float64, "cpu", seed=7)
    want = value_and_grads(pap_diffuse_reference, inputs, beta=0.5)
    one_thread = value_and_grads(pap_diffuse, inputs, beta=0.5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two_threads = value_and_grads(pap_diffuse, inputs, beta=0.5)
    finally:
        torch.set_num_threads(before)
    for name, a, b, c in zip(
        ["y", "df", "dx", "dtheta"], one_thread, two_threads, want, strict=True
    ):
        assert_close_rel(a, c, FP64_RTOL, f"1 thread {name}")
        assert_close_rel(b, c, FP64_RTOL, f"2 threads {name}")


# ---------------------------------------------------------------------------------------------
# torch.library registration and torch.compile


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device: str, dtype: torch.dtype, requires_grad: bool) -> None:
    f = torch.randn(2, 2, 9, 4, dtype=dtype, device=device, requires_grad=requires_grad)
    v = torch.randn(2, 9, 6, dtype=dtype, device=device, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.pymtl.pap_attention.default, (f, v, 0.5))
    o, lse = pap_attention(f.detach(), v.detach(), 0.5)
    grad_o = torch.randn_like(o)
    delta = (grad_o * o).sum(-1).to(lse.dtype)
    args = (f.detach(), v.detach(), lse, grad_o, delta, 0.5)
    torch.library.opcheck(torch.ops.pymtl.pap_attention_backward.default, args)
    # the T×T task mix of the attention outputs: α [T, T], O [B, T, N, T, C]
    alpha = torch.rand(2, 2, dtype=dtype, device=device, requires_grad=requires_grad)
    O = torch.randn(2, 2, 9, 2, 3, dtype=dtype, device=device, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.pymtl.pap_task_mix.default, (alpha, O))
    dY = torch.randn(2, 2, 9, 3, dtype=dtype, device=device)
    mix_args = (alpha.detach(), O.detach(), dY)
    torch.library.opcheck(torch.ops.pymtl.pap_task_mix_backward.default, mix_args)


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _diffuse_loss(f: Tensor, x: Tensor, theta: Tensor) -> Tensor:
    return pap_diffuse(f, x, theta, beta=0.5, steps=2).pow(2).sum()


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_fullgraph(device: str) -> None:
    inputs = make_inputs((2, 3, 40, 8, 6), "softmax", torch.float32, device, seed=8)
    explanation = torch._dynamo.explain(_diffuse_loss)(*inputs)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    targets = [node.target for node in explanation.graphs[0].graph.nodes]
    assert torch.ops.pymtl.pap_attention.default in targets  # the op, not a decomposition
    torch._dynamo.reset()

    compiled = torch.compile(_diffuse_loss, fullgraph=True)
    got = value_and_grads(compiled, inputs)
    want = value_and_grads(_diffuse_loss, inputs)
    for name, a, b in zip(["loss", "df", "dx", "dtheta"], got, want, strict=True):
        assert_close_rel(a, b, 1e-5, name)


# ---------------------------------------------------------------------------------------------
# errors

_f, _x, _theta = torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 5, 4), torch.zeros(2, 2)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((_f[0], _x, _theta), {}, r"f must be 4-D \[B, T, N, C'\], got shape \(2, 5, 3\)"),
        (([1.0], _x, _theta), {}, r"f must be a torch\.Tensor .*got list"),
        ((_f, _x[:, :, :4], _theta), {}, r"x \[B, T, N, C\] must match f .* in B, T and N"),
        ((_f, _x.double(), _theta), {}, r"x must be torch\.float32 on cpu like f"),
        ((_f.half(), _x.half(), _theta), {}, r"f must be one of float32, float64 on cpu"),
        ((_f, _x, _theta[:1]), {}, r"alpha_logits must be a floating tensor \[T, T\] = \[2, 2\]"),
        ((_f, _x, _theta.long()), {}, r"alpha_logits must be a floating tensor"),
        ((_f, _x, _theta), {"beta": 1.5}, r"beta must be a number in \[0, 1\], got 1\.5"),
        ((_f, _x, _theta), {"beta": True}, r"beta must be a number in \[0, 1\], got True"),
        ((_f, _x, _theta), {"steps": 0}, r"steps must be an int in \[1, 8\], got 0"),
        ((_f, _x, _theta), {"steps": 9}, r"steps must be an int in \[1, 8\], got 9"),
        ((_f, _x, _theta), {"steps": 2.0}, r"steps must be an int in \[1, 8\], got 2\.0"),
        ((_f, _x, _theta), {"norm": "cosine"}, r"norm must be one of softmax, cosine_sum, "),
        ((_f, _x, _theta), {"scale": -1.0}, r"scale must be a positive finite number or None"),
        ((_f[:, :, :0], _x[:, :, :0], _theta), {}, r"T, N and the channel counts must be >= 1"),
    ],
    ids=[
        "f-3D", "f-list", "x-shape", "x-dtype", "half-on-cpu", "theta-shape", "theta-int",
        "beta-range", "beta-bool", "steps-0", "steps-9", "steps-float", "norm", "scale", "N0",
    ],
)  # fmt: skip
def test_bad_input_raises_op_error(
    args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(OpError, match=match) as info:
        pap_diffuse(*args, **kwargs)  # type: ignore[arg-type]
    assert info.match(r"^pap_diffuse: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("f", "v", "match"),
    [
        (_f, torch.zeros(1, 4, 6), r"v \[B, N, Cv\] must match f \[B, T, N, Cq\] in B and N"),
        (_f, torch.zeros(5, 6), r"v must be 3-D \[B, N, Cv\], got shape \(5, 6\)"),
        (_f.long(), torch.zeros(1, 5, 6).long(), r"f must be one of float32, float64 on cpu"),
    ],
    ids=["v-shape", "v-2D", "int64"],
)
def test_attention_bad_input(f: Tensor, v: Tensor, match: str) -> None:
    with pytest.raises(OpError, match=match):
        pap_attention(f, v)


# ---------------------------------------------------------------------------------------------
# compiled kernel vs pure-PyTorch fallback


def test_compiled_kernel_is_used(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not kernel_available(device):
        pytest.skip(f"no compiled kernel for {device}: {pymtl._ext.status()}")

    def no_fallback(*args: object) -> tuple[Tensor, Tensor]:
        raise AssertionError("pap_attention fell back to PyTorch")

    monkeypatch.setattr(pap_module, "_fallback_forward", no_fallback)
    monkeypatch.setattr(pap_module, "_fallback_backward", no_fallback)
    inputs = make_inputs((1, 2, 10, 4, 3), "softmax", torch.float32, device, seed=9)
    value_and_grads(pap_diffuse, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fallback_equals_kernel(
    device: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocked PyTorch path (no extension, or no kernel for the device / dtype), here in
    blocks of 13 query rows, against the kernel (or, without one, the reference)."""
    inputs = make_inputs((2, 3, 150, 6, 5), "softmax", dtype, device, seed=10)
    rtol = FP64_RTOL if dtype == torch.float64 else FP32_RTOL
    kernel = value_and_grads(pap_diffuse, inputs, steps=2, beta=0.5)
    monkeypatch.setattr(pap_module, "_C", None)
    monkeypatch.setattr(pap_module, "_FALLBACK_BLOCK", 2 * 3 * 150 * 13)
    fallback = value_and_grads(pap_diffuse, inputs, steps=2, beta=0.5)
    for name, a, b in zip(["y", "df", "dx", "dtheta"], fallback, kernel, strict=True):
        assert a.dtype == dtype
        assert_close_rel(a, b, rtol, f"fallback {name}")


_FALLBACK_SCRIPT = textwrap.dedent(
    """
    import torch
    import pymtl._ext
    from pymtl.ops import pap_diffuse, pap_diffuse_reference

    assert pymtl._ext.extension is None, pymtl._ext.status()
    g = torch.Generator().manual_seed(0)
    f, x = torch.randn(2, 3, 40, 4, generator=g), torch.randn(2, 3, 40, 5, generator=g)
    theta = torch.randn(3, 3, generator=g)
    for t in (f, x, theta):
        t.requires_grad_()
    y = pap_diffuse(f, x, theta, beta=0.5, steps=2)
    y.square().sum().backward()
    y_ref = pap_diffuse_reference(f, x, theta, beta=0.5, steps=2)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert f.grad is not None and f.grad.abs().max() > 0
    print("fallback ok")
    """
)


def test_fallback_when_extension_disabled() -> None:
    """``PYMTL_DISABLE_EXT=1``: no compiled module, pap_diffuse runs the blocked fallback."""
    run_without_extension(_FALLBACK_SCRIPT)


# ---------------------------------------------------------------------------------------------
# CUDA low precision

CUDA_RTOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", list(CUDA_RTOL), ids=str)
def test_cuda_precisions_against_fp64(dtype: torch.dtype) -> None:
    """fp32 / fp16 / bf16 on CUDA (fp32 accumulation) against the fp64 reference: the input
    rounding alone (u = 2^-11 for fp16, 2^-8 for bf16) moves logits of size ~√C' by ~√C' u."""
    inputs = make_inputs((2, 3, 200, 64, 32), "softmax", torch.float64, "cuda", seed=11)
    want = value_and_grads(pap_diffuse_reference, inputs, beta=0.5)
    got = value_and_grads(pap_diffuse, tuple(t.to(dtype) for t in inputs), beta=0.5)
    for name, a, b in zip(["y", "df", "dx", "dtheta"], got, want, strict=True):
        assert a.dtype == dtype
        assert_close_rel(a, b, CUDA_RTOL[dtype], f"{dtype} {name}")
