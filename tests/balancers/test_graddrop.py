"""GradDrop: against a direct element-wise implementation of SPEC-methods §2.11, the leak and
sign-agreement cases, seeded draws, and state round trip."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.balancers.graddrop import GradDrop, GradDropConfig
from pymtl.testing import check_balancer

F64 = torch.float64


def test_conformance():
    check_balancer(GradDrop)
    check_balancer(GradDrop, config=GradDropConfig(leak=0.3, seed=5))


def _direct(J: torch.Tensor, z: torch.Tensor, u: torch.Tensor, leak: float) -> torch.Tensor:
    """SPEC-methods §2.11 written element by element."""
    T, B, N = J.shape
    d = torch.zeros(B, N, dtype=J.dtype)
    for n in range(N):
        S = [sum(float(torch.sign(z[b, n]) * J[t, b, n]) for b in range(B)) for t in range(T)]
        P = 0.5 * (1 + sum(S) / (sum(abs(s) for s in S) + 1e-7))
        for t in range(T):
            keep = (u[n] < P and S[t] > 0) or (u[n] > P and S[t] < 0)
            d[:, n] += (leak + (1 - leak) * float(keep)) * J[t, :, n]
    return d


@pytest.mark.parametrize("leak", [0.0, 0.25])
def test_matches_the_direct_definition(leak):
    gen = torch.Generator().manual_seed(0)
    T, B, N = 3, 4, 7
    J = torch.randn(T, B, N, generator=gen, dtype=F64)
    z = torch.randn(B, N, generator=gen, dtype=F64)
    z[0, 0] = 0.0  # sign 0: that sample does not vote
    balancer = GradDrop(["a", "b", "c"], leak=leak, seed=3)
    out = balancer(torch.ones(3, dtype=F64), jacobian=J.reshape(T, -1), representation=z)
    u = torch.rand(N, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(out.direct, _direct(J, z, u, leak).reshape(-1))
    assert out.shared.tolist() == [1.0, 1.0, 1.0]
    assert out.task.tolist() == [1.0, 1.0, 1.0]


def test_full_leak_keeps_every_gradient():
    gen = torch.Generator().manual_seed(1)
    J = torch.randn(2, 3, 5, generator=gen, dtype=F64)
    z = torch.randn(3, 5, generator=gen, dtype=F64)
    out = GradDrop(["a", "b"], leak=1.0)(
        torch.ones(2, dtype=F64), jacobian=J.reshape(2, -1), representation=z
    )
    torch.testing.assert_close(out.direct, J.sum(0).reshape(-1))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_agreeing_signs_are_all_kept(T, B, seed):
    """Where every task's signed gradient has the same sign, P is 0 or 1 (up to 1e-7) and
    no draw of U drops anything."""
    gen = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(T, B, 6, generator=gen, dtype=F64) + 0.1
    sign = torch.where(torch.rand(6, generator=gen) < 0.5, -1.0, 1.0).to(F64)
    J = magnitude * sign  # the same sign for every task and sample
    z = torch.rand(B, 6, generator=gen, dtype=F64) + 0.1  # positive activations
    out = GradDrop([f"t{i}" for i in range(T)], seed=seed)(
        torch.ones(T, dtype=F64), jacobian=J.reshape(T, -1), representation=z
    )
    torch.testing.assert_close(out.direct, J.sum(0).reshape(-1))


def test_draws_are_seeded_and_resume_from_the_state():
    gen = torch.Generator().manual_seed(2)
    J = torch.randn(2, 1, 50, generator=gen, dtype=F64)
    z = torch.randn(1, 50, generator=gen, dtype=F64)
    inputs = {"jacobian": J.reshape(2, -1), "representation": z}
    a, b = GradDrop(["x", "y"], seed=7), GradDrop(["x", "y"], seed=7)
    losses = torch.ones(2, dtype=F64)
    first = a(losses, **inputs).direct
    torch.testing.assert_close(first, b(losses, **inputs).direct)
    c = GradDrop(["x", "y"], seed=7)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(losses, **inputs).direct, c(losses, **inputs).direct)
    assert not torch.equal(GradDrop(["x", "y"], seed=8)(losses, **inputs).direct, first)


def test_refuses_a_jacobian_that_does_not_match_z():
    with pytest.raises(ValueError, match=r"J_Z has 10 columns but Z \(2, 4\) has 8 elements"):
        GradDrop(["a", "b"])(
            torch.ones(2), jacobian=torch.zeros(2, 10), representation=torch.zeros(2, 4)
        )
