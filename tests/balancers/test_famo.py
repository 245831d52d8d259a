"""FAMO: hand-computed weights, the hand-written Adam step of the logits against torch.optim.Adam,
loss-scale invariance, equal log-loss decrease on a separable toy problem, state round trips and
a short training run through the loop (the extra forward reaches ``after_step``)."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.balancers.famo import FAMO, FAMOConfig
from pymtl.config import resolve_config
from pymtl.engine import train
from pymtl.engine.checkpoint import load_checkpoint
from pymtl.testing import check_balancer

F64 = torch.float64


def test_conformance():
    check_balancer(FAMO)
    check_balancer(FAMO, config=FAMOConfig(lr=0.1, gamma=0.0, eps=1e-6))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("lr", 0.0, ValueError),
        ("gamma", -0.001, ValueError),
        ("eps", math.inf, ValueError),
        ("lr", True, TypeError),
    ],
)
def test_config_rejects_bad_values(field, value, error):
    with pytest.raises(error, match=f"'{field}'"):
        FAMOConfig(**{field: value})
    with pytest.raises(error, match=f"'{field}'"):
        FAMO(["a", "b"], **{field: value})


def test_hand_computed_weights():
    b = FAMO(["a", "b", "c"], eps=0.5)
    b.logits.copy_(torch.tensor([0.0, math.log(2.0), math.log(3.0)], dtype=F64))
    losses = torch.tensor([1.5, 0.5, 3.5])  # L + ε = 2, 1, 4
    z = [1 / 6, 2 / 6, 3 / 6]
    c = z[0] / 2 + z[1] / 1 + z[2] / 4
    expected = torch.tensor([z[0] / (2 * c), z[1] / (1 * c), z[2] / (4 * c)])
    out = b(losses)
    assert out.shared.dtype == torch.float32
    assert out.aux_loss is None
    torch.testing.assert_close(out.shared, expected)
    assert torch.equal(out.shared, out.task)
    # the weighted losses (L + ε) w_t are proportional to z_t
    torch.testing.assert_close(
        out.shared * (losses + 0.5) / torch.tensor(z), torch.full((3,), 1 / c)
    )


def test_logit_gradient_is_the_softmax_jacobian_times_delta():
    b = FAMO(["a", "b", "c"])
    b.logits.copy_(torch.tensor([0.3, -0.2, 0.7], dtype=F64))
    before = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    after = torch.tensor([0.8, 1.9, 0.45], dtype=F64)
    xi = b.logits.clone().requires_grad_()
    delta = torch.log(before + b.eps) - torch.log(after + b.eps)
    (expected,) = torch.autograd.grad(torch.softmax(xi, 0), xi, grad_outputs=delta)
    torch.testing.assert_close(b.logit_gradient(before, after), expected)


def test_adam_steps_match_torch_adam():
    b = FAMO(["a", "b", "c"], lr=0.05, gamma=0.01)
    xi = torch.nn.Parameter(torch.zeros(3, dtype=F64))
    adam = torch.optim.Adam([xi], lr=0.05, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        before = torch.rand(3, generator=gen, dtype=F64) + 0.5
        after = before * (0.5 + torch.rand(3, generator=gen, dtype=F64))
        xi.grad = b.logit_gradient(before, after)  # evaluated at the same ξ as xi
        adam.step()
        b.after_step(before, after)
        torch.testing.assert_close(b.logits, xi.detach(), rtol=1e-12, atol=1e-14)
    assert int(b.adam_step) == 4


def test_first_step_moves_weight_to_the_task_that_improved_less():
    b = FAMO(["fast", "slow"])
    before = torch.tensor([1.0, 1.0], dtype=F64)
    b.after_step(before, torch.tensor([0.5, 0.9], dtype=F64))
    # Adam's first step has magnitude lr in every coordinate with a non-zero gradient
    torch.testing.assert_close(b.logits, torch.tensor([-0.025, 0.025], dtype=F64))
    z = torch.softmax(b.logits, 0)
    assert z[1] > z[0]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
    st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3),
    st.lists(st.floats(0.5, 1.5), min_size=3, max_size=3),
    st.lists(st.floats(1e-2, 1e2), min_size=3, max_size=3),
)
def test_loss_scale_invariance(logits, losses, ratios, scales):
    """Scaling task t's loss by k_t changes neither the logit gradient nor the direction
    Σ_t w_t ∇L_t beyond a common factor (exactly so for ε → 0)."""
    xi, L, R, k = (torch.tensor(v, dtype=F64) for v in (logits, losses, ratios, scales))
    plain, scaled = FAMO(["a", "b", "c"], eps=1e-12), FAMO(["a", "b", "c"], eps=1e-12)
    plain.logits.copy_(xi)
    scaled.logits.copy_(xi)
    torch.testing.assert_close(
        plain.logit_gradient(L, L * R), scaled.logit_gradient(k * L, k * L * R), atol=1e-8, rtol=0
    )
    w, w_scaled = plain(L).shared, scaled(k * L).shared
    factor = w_scaled * k / w  # per-task multiplier of ∇L_t
    torch.testing.assert_close(factor, factor[:1].expand(3), rtol=1e-9, atol=0.0)


def _toy_run(weighting, scales, steps=5, lr=0.01, famo_lr=0.025):
    """Gradient descent on L_t = k_t θ_t² (θ ∈ R², one coordinate per task); returns the
    per-task log-loss decrease after each step."""
    k = torch.tensor(scales, dtype=F64)
    theta = torch.ones(2, dtype=F64, requires_grad=True)
    b = FAMO(["a", "b"], lr=famo_lr, eps=1e-12) if weighting == "famo" else None
    start = torch.log(k * theta.detach() ** 2)
    drops = []
    for _ in range(steps):
        losses = k * theta**2
        w = b(losses).shared if b is not None else torch.ones(2, dtype=F64)
        (grad,) = torch.autograd.grad((w * losses).sum(), theta)
        with torch.no_grad():
            theta -= lr * grad
        after = (k * theta**2).detach()
        if b is not None:
            b.after_step(losses.detach(), after)
        drops.append(start - torch.log(after))
    return drops, b


def test_log_losses_decrease_at_equal_rates_whatever_the_loss_scales():
    ew, _ = _toy_run("ew", [100.0, 0.1], lr=0.001)
    assert ew[-1][0] > 100 * ew[-1][1]  # plain summation favours the large-scale task
    # FAMO: w_t ∇L_t ∝ z_t ∇log L_t, so with z uniform both log-losses drop alike
    drops, b = _toy_run("famo", [100.0, 0.1], famo_lr=1e-9)
    for d in drops:
        assert d[0] > 0
        torch.testing.assert_close(d[0], d[1], rtol=1e-6, atol=0.0)
    # at the default lr, Adam turns rounding-level logit gradients into steps of up to lr,
    # so z jitters by at most exp(2 · lr · steps) and the rates stay within that factor
    drops, b = _toy_run("famo", [100.0, 0.1])
    bound = math.exp(2 * 0.025 * len(drops))
    assert b.logits.abs().max() <= 0.025 * len(drops)
    assert all(1 / bound < float(d[0] / d[1]) < bound for d in drops)


def test_state_round_trip_gives_identical_weights_and_updates():
    tasks = ["a", "b", "c"]
    b = FAMO(tasks, lr=0.1)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        before = torch.rand(3, generator=gen, dtype=F64) + 0.2
        b(before)
        b.after_step(before, before * torch.rand(3, generator=gen, dtype=F64))
    state = b.state_dict()
    assert set(state) == {"logits", "adam_m", "adam_v", "adam_step"}
    fresh = FAMO(tasks, lr=0.1)
    fresh.load_state_dict(state)
    assert not any(p.requires_grad for p in fresh.parameters())
    losses = torch.tensor([0.4, 1.3, 2.2], dtype=F64)
    assert torch.equal(b(losses).shared, fresh(losses).shared)
    b.after_step(losses, losses * 0.7)
    fresh.after_step(losses, losses * 0.7)
    for key, value in b.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


def test_after_step_rejects_wrong_shapes():
    b = FAMO(["a", "b"])
    with pytest.raises(ValueError, match=r"losses_after must have shape \(2,\).*got \(3,\)"):
        b.after_step(torch.ones(2), torch.ones(3))


TINY = {
    "seed": 0,
    "dataset": {
        "name": "synthetic",
        "image_size": 16,
        "train_size": 8,
        "val_size": 4,
        "test_size": 4,
        "tasks": ["semseg", "depth", "count"],
        "hflip": False,
    },
    "arch": {"name": "hps", "head_channels": 4, "backbone": {"name": "convnet", "width": 4}},
    "balancer": {"name": "famo"},
    "train": {"epochs": 1, "batch_size": 4, "lr": 0.01},
}


def test_two_training_steps_call_after_step(tmp_path, monkeypatch):
    from pymtl.plugins import get_registry

    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "home"))
    registry = get_registry(autoload=False)
    run = tmp_path / "run"
    train(resolve_config(TINY, registry), run, registry=registry, progress=False)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["global_step"] == 2
    famo = state["balancer"]
    assert int(famo["adam_step"]) == 2
    assert famo["logits"].abs().max() > 0
    assert torch.isfinite(famo["logits"]).all()
    summary = json.loads((run / "metrics.json").read_text())
    values = [v for m in summary["metrics"].values() for v in m.values()]
    assert values
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
