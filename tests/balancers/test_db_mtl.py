"""DB-MTL: two steps by hand (log-loss gradients, EMA buffers, max-norm scaling), the EMA
decay, state round trip and errors."""

import pytest
import torch

from pymtl.balancers.db_mtl import DBMTL, DBMTLConfig
from pymtl.testing import check_balancer

F64 = torch.float64
EPS = 1e-8


def test_conformance():
    check_balancer(DBMTL)
    check_balancer(DBMTL, config=DBMTLConfig(beta=0.5, sigma=0.5))


def _expected(ms: torch.Tensor) -> torch.Tensor:
    norms = ms.norm(dim=1)
    return ((norms.max() / (norms + EPS))[:, None] * ms).sum(0)


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_two_steps_by_hand(sigma):
    beta = 0.9
    b = DBMTL(["a", "b"], beta=beta, sigma=sigma)
    J1 = torch.tensor([[1.0, 2.0, 0.0], [0.0, -4.0, 4.0]], dtype=F64)
    L1 = torch.tensor([2.0, 0.5], dtype=F64)
    out1 = b(L1, jacobian=J1)
    m1 = (1 - beta) * J1 / (L1[:, None] + EPS)  # the buffers start at zero
    torch.testing.assert_close(out1.direct, _expected(m1))
    torch.testing.assert_close(out1.task, 1 / (L1 + EPS))
    J2 = torch.tensor([[0.5, 0.0, 1.0], [2.0, 2.0, -1.0]], dtype=F64)
    L2 = torch.tensor([1.0, 4.0], dtype=F64)
    out2 = b(L2, jacobian=J2)
    rate = beta / 2.0**sigma
    m2 = J2 / (L2[:, None] + EPS) + rate * (m1 - J2 / (L2[:, None] + EPS))
    torch.testing.assert_close(b.ema, m2)
    torch.testing.assert_close(out2.direct, _expected(m2))
    norms = m2.norm(dim=1)
    torch.testing.assert_close(out2.shared, norms.max() / (norms + EPS))


def test_state_round_trip_restores_the_buffers():
    b = DBMTL(["a", "b"])
    b(torch.tensor([1.0, 2.0], dtype=F64), jacobian=torch.randn(2, 5, dtype=F64))
    fresh = DBMTL(["a", "b"])
    fresh.load_state_dict(b.state_dict())
    torch.testing.assert_close(fresh.ema, b.ema)
    assert int(fresh.steps) == 1
    J = torch.randn(2, 5, dtype=F64)
    L = torch.tensor([0.3, 0.7], dtype=F64)
    torch.testing.assert_close(fresh(L, jacobian=J).direct, b(L, jacobian=J).direct)


def test_refuses_a_jacobian_of_another_size():
    b = DBMTL(["a", "b"])
    b(torch.ones(2), jacobian=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"J has shape \(2, 5\) but the gradient buffers are"):
        b(torch.ones(2), jacobian=torch.ones(2, 5))


@pytest.mark.parametrize(("field", "value"), [("beta", 1.5), ("sigma", -1.0), ("beta", True)])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=rf"balancer 'db_mtl': '{field}' must be a number"):
        DBMTLConfig(**{field: value})
