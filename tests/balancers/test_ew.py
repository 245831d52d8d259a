import torch

from pymtl.balancers.ew import EqualWeights
from pymtl.testing import check_balancer


def test_conformance():
    check_balancer(EqualWeights)


def test_weights_are_one_and_gradient_is_the_sum():
    # two tasks on a shared scalar θ: L1 = θ², L2 = 3θ; the ew update is dL1/dθ + dL2/dθ
    theta = torch.tensor(2.0, requires_grad=True)
    losses = torch.stack([theta**2, 3 * theta])
    out = EqualWeights(["a", "b"])(losses.detach())
    assert out.shared.tolist() == [1.0, 1.0]
    assert out.task.tolist() == [1.0, 1.0]
    assert out.aux_loss is None
    (out.shared * losses).sum().backward()
    assert theta.grad.item() == 2 * 2.0 + 3


def test_follows_losses_dtype():
    out = EqualWeights(["a", "b", "c"])(torch.ones(3, dtype=torch.float64))
    assert out.shared.dtype == torch.float64
