"""TrainStep's gradient modes against gradients computed independently with autograd.

A tiny ``hps`` model (fp64, so sums in another order still agree to ~1e-12) and hand-made
batches; the balancers are test-only classes (not registered) that return fixed weights and
record what the step gave them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import torch
from torch import Tensor, nn

from pymtl import Balancer, Needs, PymtlError, Weights
from pymtl.architectures.hps import HardSharing
from pymtl.architectures.stl import SingleTask
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.config import BackboneSection
from pymtl.engine.step import NonFiniteLossError, TrainStep
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask

TASKS = (
    SegmentationTask(name="seg", num_classes=3),
    DepthTask(name="depth"),
    ClassificationTask(name="cls", num_classes=4),
)
NAMES = [t.name for t in TASKS]
W = [0.5, 2.0, 1.5]  # shared weights w
S = [1.0, 0.25, 3.0]  # task-specific weights s
GRADIENT_MODES = [Needs.GRAM, Needs.JACOBIAN]
REPRESENTATION_MODES = [Needs.REPRESENTATION_GRAM, Needs.REPRESENTATION_JACOBIAN]


@attrs.frozen(kw_only=True)
class _NoOptions:
    """No options."""


class _Constant(Balancer):
    """Test-only: fixed ``w`` and ``s``, records every input it receives [pymtl]."""

    name = "test_constant"
    Config = _NoOptions

    def __init__(
        self, tasks: Sequence[str], *, w: Sequence[float], s: Sequence[float] | None = None
    ) -> None:
        super().__init__(tasks)
        self.w = torch.tensor(w, dtype=torch.float64)
        self.s = self.w if s is None else torch.tensor(s, dtype=torch.float64)
        self.seen: list[dict[str, Tensor | None]] = []

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        self.seen.append({"losses": losses.clone(), "gram": gram, "jacobian": jacobian})
        return Weights(shared=self.w.to(losses), task=self.s.to(losses))


def _balancer(needs: Needs, w: Sequence[float] = W, s: Sequence[float] | None = None) -> _Constant:
    cls = type(
        f"_{needs.name.title()}", (_Constant,), {"needs": needs, "name": f"test_{needs.value}"}
    )
    return cls(NAMES, w=w, s=s)


class _Learnable(_Constant):
    """Test-only: constant weights plus an auxiliary loss on its own parameter [pymtl]."""

    name = "test_learnable"

    def __init__(self, tasks: Sequence[str], *, needs: Needs) -> None:
        super().__init__(tasks, w=W)  # w = s: valid in every mode
        self.needs = needs  # type: ignore[misc]
        self.sigma = nn.Parameter(torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64))

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        weights = super().compute(losses, gram=gram, jacobian=jacobian)
        return attrs.evolve(weights, aux_loss=(self.sigma**2).sum())


def _backbone() -> BackboneSection:
    return BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))


def _model(cls: type[HardSharing] | type[SingleTask] = HardSharing) -> Any:
    torch.manual_seed(0)
    net = cls(TASKS, 3, backbone=_backbone(), head_channels=4, head_rates=(2,))
    return net.double().train()


def _batch() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1)
    seg = torch.randint(0, 3, (2, 16, 16), generator=gen)
    seg[0, :3] = -1  # ignored pixels
    return {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64),
        "seg": seg,
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64) + 0.5,
        "depth.mask": torch.tensor([True, False]),  # the second sample has no depth label
        "cls": torch.tensor([1, 3]),
    }


def _losses(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> list[Tensor]:
    return [t.loss(outputs[t.name], batch[t.name], batch.get(f"{t.name}.mask")) for t in TASKS]


def _flat(grads: Sequence[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _jacobian(losses: Sequence[Tensor], wrt: Sequence[Tensor]) -> Tensor:
    """[T, P]: one row per loss, the flattened gradient w.r.t. ``wrt``."""
    return torch.stack([_flat(torch.autograd.grad(L, wrt, retain_graph=True)) for L in losses])


def _own_grads(ref: Any, losses: Sequence[Tensor], s: Sequence[float]) -> dict[int, Tensor]:
    """``s_t ∇θ_t L_t`` keyed by the position of each task parameter in ``parameters()``."""
    index = {id(p): i for i, p in enumerate(ref.parameters())}
    out = {}
    for t, (name, loss) in enumerate(zip(NAMES, losses, strict=True)):
        params = list(ref.task_parameters(name))
        for p, g in zip(params, torch.autograd.grad(loss, params, retain_graph=True), strict=True):
            out[index[id(p)]] = s[t] * g
    return out


def _assert_task_grads(model: Any, expected: dict[int, Tensor]) -> None:
    params = list(model.parameters())
    for i, g in expected.items():
        torch.testing.assert_close(params[i].grad, g, msg=lambda m, i=i: f"parameter {i}: {m}")


@pytest.fixture
def autograd_calls(monkeypatch):
    """Count calls of torch.autograd.backward (``Tensor.backward`` included) and .grad."""
    calls = {"backward": 0, "grad": 0}
    backward, grad = torch.autograd.backward, torch.autograd.grad

    def counted(kind, fn):
        def wrapper(*args, **kwargs):
            calls[kind] += 1
            return fn(*args, **kwargs)

        return wrapper

    def start():
        monkeypatch.setattr(torch.autograd, "backward", counted("backward", backward))
        monkeypatch.setattr(torch.autograd, "grad", counted("grad", grad))
        return calls

    return start


class _Probe(torch.autograd.Function):
    """Identity on the encoder output Z that counts the backward passes through the encoder."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, counter: dict[str, int]) -> Tensor:
        ctx.counter = counter
        return z.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.counter["encoder"] += 1
        return grad, None


def _probe_encoder(model: Any, monkeypatch) -> dict[str, int]:
    counter = {"encoder": 0}
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: _Probe.apply(encode(x), counter))
    return counter


# --- LOSSES -------------------------------------------------------------------------------------


def test_losses_mode_is_one_backward_of_the_weighted_sum(autograd_calls, monkeypatch):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    total = sum(w * L for w, L in zip(W, losses, strict=True))
    expected = torch.autograd.grad(total, list(ref.parameters()))
    balancer = _balancer(Needs.LOSSES)
    step = TrainStep(model, TASKS, balancer)
    encoder = _probe_encoder(model, monkeypatch)
    calls = autograd_calls()
    result = step(batch)
    assert calls == {"backward": 1, "grad": 0}
    assert encoder == {"encoder": 1}
    for (name, p), g in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(result.losses, torch.stack(losses).detach())
    torch.testing.assert_close(balancer.seen[0]["losses"], torch.stack(losses).detach())
    assert balancer.seen[0]["gram"] is None
    assert balancer.seen[0]["jacobian"] is None
    assert torch.equal(result.weights.shared, torch.tensor(W, dtype=torch.float64))


def test_losses_mode_honours_task_weights_or_refuses():
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    expected = _own_grads(ref, losses, S)
    try:
        TrainStep(model, TASKS, _balancer(Needs.LOSSES, w=W, s=S))(batch)
    except PymtlError:
        return  # refusing w ≠ s in LOSSES mode is an acceptable answer too
    _assert_task_grads(model, expected)


# --- GRAM / JACOBIAN ------------------------------------------------------------------------------


@pytest.mark.parametrize("needs", GRADIENT_MODES, ids=lambda n: n.value)
def test_gradient_modes_against_independent_jacobian(needs, autograd_calls):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    J = _jacobian(losses, list(ref.shared_parameters()))
    own = _own_grads(ref, losses, S)
    balancer = _balancer(needs, w=W, s=S)
    step = TrainStep(model, TASKS, balancer)
    calls = autograd_calls()
    step(batch)
    assert calls == {"grad": len(TASKS), "backward": 1}  # one autograd.grad per task
    (seen,) = balancer.seen
    torch.testing.assert_close(seen["losses"], torch.stack(losses).detach())
    if needs is Needs.GRAM:
        assert seen["jacobian"] is None
        torch.testing.assert_close(seen["gram"], J @ J.T)
    else:
        assert seen["gram"] is None
        torch.testing.assert_close(seen["jacobian"], J)
    shared = _flat([p.grad for p in model.shared_parameters()])
    torch.testing.assert_close(shared, J.T @ torch.tensor(W, dtype=torch.float64))
    _assert_task_grads(model, own)


def test_gram_mode_runs_back_through_the_encoder_once_per_task(monkeypatch):
    model, batch = _model(), _batch()
    step = TrainStep(model, TASKS, _balancer(Needs.GRAM))
    encoder = _probe_encoder(model, monkeypatch)
    step(batch)
    assert encoder == {"encoder": len(TASKS)}


# --- REPRESENTATION_* ---------------------------------------------------------------------------


@pytest.mark.parametrize("needs", REPRESENTATION_MODES, ids=lambda n: n.value)
def test_representation_modes_against_independent_jacobian(needs, monkeypatch):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    x = batch["image"]
    z = ref.encode(x)
    losses = _losses(ref.decode(z, x.shape[-2:]), batch)
    JZ = _jacobian(losses, [z])  # [T, |Z|], Z flattened over the whole batch
    dz = (JZ.T @ torch.tensor(W, dtype=torch.float64)).view_as(z)
    encoder_grads = torch.autograd.grad(z, list(ref.shared_parameters()), dz, retain_graph=True)
    own = _own_grads(ref, losses, S)
    balancer = _balancer(needs, w=W, s=S)
    step = TrainStep(model, TASKS, balancer)
    encoder = _probe_encoder(model, monkeypatch)
    step(batch)
    assert encoder == {"encoder": 1}  # J_Zᵀ w goes back through the encoder once
    (seen,) = balancer.seen
    if needs is Needs.REPRESENTATION_GRAM:
        assert seen["jacobian"] is None
        torch.testing.assert_close(seen["gram"], JZ @ JZ.T)
    else:
        assert seen["gram"] is None
        torch.testing.assert_close(seen["jacobian"], JZ)
    for p, g in zip(model.shared_parameters(), encoder_grads, strict=True):
        torch.testing.assert_close(p.grad, g)
    _assert_task_grads(model, own)


# --- modes agree with equal weights, auxiliary losses -------------------------------------------


@pytest.mark.parametrize("needs", GRADIENT_MODES + REPRESENTATION_MODES, ids=lambda n: n.value)
def test_equal_weights_give_the_losses_mode_gradients(needs):
    model, batch = _model(), _batch()
    other = copy.deepcopy(model)
    TrainStep(model, TASKS, _balancer(Needs.LOSSES, w=[1.0] * 3))(batch)
    TrainStep(other, TASKS, _balancer(needs, w=[1.0] * 3, s=[1.0] * 3))(batch)
    for (name, p), q in zip(model.named_parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("needs", [Needs.LOSSES, Needs.GRAM, Needs.REPRESENTATION_GRAM])
def test_auxiliary_loss_reaches_the_balancer_parameters(needs):
    balancer = _Learnable(NAMES, needs=needs)
    TrainStep(_model(), TASKS, balancer)(_batch())
    torch.testing.assert_close(balancer.sigma.grad, 2 * balancer.sigma.detach())


# --- mixed precision (train.amp: bfloat16 autocast around the step) ---------------------------


@pytest.mark.parametrize(
    "needs",
    [Needs.LOSSES, *GRADIENT_MODES, *REPRESENTATION_MODES],
    ids=lambda n: n.value,
)
def test_every_mode_runs_under_bfloat16_autocast(needs):
    model = _model().float()
    batch = {k: v.float() if v.is_floating_point() else v for k, v in _batch().items()}
    balancer = _balancer(needs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        TrainStep(model, TASKS, balancer)(batch)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
    for key in ("losses", "gram", "jacobian"):  # the balancer works in full precision
        value = balancer.seen[0][key]
        assert value is None or value.dtype == torch.float32, f"{key}: {value.dtype}"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("needs", REPRESENTATION_MODES, ids=lambda n: n.value)
def test_representation_balancer_needs_a_shared_representation(needs):
    with pytest.raises(PymtlError, match=rf"balancer 'test_{needs.value}' .*architecture 'stl'"):
        TrainStep(_model(SingleTask), TASKS, _balancer(needs))


@pytest.mark.parametrize("needs", GRADIENT_MODES, ids=lambda n: n.value)
def test_gradient_balancer_needs_shared_parameters(needs):
    with pytest.raises(
        PymtlError, match=rf"balancer 'test_{needs.value}' needs .*architecture 'stl' shares none"
    ):
        TrainStep(_model(SingleTask), TASKS, _balancer(needs))


def test_losses_balancer_trains_stl():
    model, batch = _model(SingleTask), _batch()
    TrainStep(model, TASKS, _balancer(Needs.LOSSES))(batch)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("needs", [Needs.LOSSES, Needs.GRAM, Needs.REPRESENTATION_GRAM])
def test_non_finite_loss_names_the_task_and_writes_no_gradient(needs):
    model = _model()
    with torch.no_grad():
        model.heads["depth"].classifier.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss: depth=nan$"):
        TrainStep(model, TASKS, _balancer(needs))(_batch())
    assert all(p.grad is None for p in model.parameters())
