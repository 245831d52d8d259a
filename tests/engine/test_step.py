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
from torch import Tensor

from pymtl import Needs, PymtlError, Weights
from pymtl.architectures.stl import SingleTask
from pymtl.engine.step import NonFiniteLossError, TrainStep
from tests.engine._step_helpers import (
    GRADIENT_MODES,
    NAMES,
    REPRESENTATION_MODES,
    TASKS,
    S,
    W,
    _assert_task_grads,
    _balancer,
    _batch,
    _Constant,
    _flat,
    _jacobian,
    _Learnable,
    _losses,
    _model,
    _own_grads,
)


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


ENGINE_MODES = ["sequential", "batched", "gram"]
# (autograd.grad calls, autograd.backward calls) per step for each engine mode: sequential is
# one grad per task; batched one vectorised grad; gram one grad per chunk (one chunk here)
# then one weighted backward of the shared parameters; each also has the task-specific pass.
# (on the CPU, gram mode's chunks take one backward per task unless batched is asked for)
CALLS = {"sequential": (len(TASKS), 1), "batched": (1, 1), "gram": (len(TASKS), 2)}


@pytest.mark.parametrize("mode", ENGINE_MODES)
@pytest.mark.parametrize("needs", GRADIENT_MODES, ids=lambda n: n.value)
def test_gradient_modes_against_independent_jacobian(needs, mode, autograd_calls):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    J = _jacobian(losses, list(ref.shared_parameters()))
    own = _own_grads(ref, losses, S)
    balancer = _balancer(needs, w=W, s=S)
    step = TrainStep(model, TASKS, balancer, grad_mode=mode)
    calls = autograd_calls()
    step(batch)
    effective = "sequential" if mode == "gram" and needs is Needs.JACOBIAN else mode
    assert step.plan.mode == effective
    grads, backwards = CALLS[effective]
    assert calls == {"grad": grads, "backward": backwards}
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


def test_gram_mode_splits_into_chunks_under_a_small_budget(autograd_calls):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    J = _jacobian(losses, list(ref.shared_parameters()))
    balancer = _balancer(Needs.GRAM, w=W, s=S)
    step = TrainStep(model, TASKS, balancer, grad_memory_mb=1e-4)  # ~100 bytes: a chunk each
    assert step.plan.mode == "gram"
    n_chunks = len(step.plan.chunks)
    assert n_chunks == len(list(model.shared_parameters()))
    calls = autograd_calls()
    step(batch)
    assert calls == {"grad": n_chunks * len(TASKS), "backward": 2}
    torch.testing.assert_close(balancer.seen[0]["gram"], J @ J.T)
    shared = _flat([p.grad for p in model.shared_parameters()])
    torch.testing.assert_close(shared, J.T @ torch.tensor(W, dtype=torch.float64))
    assert "gram" in step.describe()
    assert "chunk" in step.describe()


@pytest.mark.parametrize("mode", ["batched", "gram"])
@pytest.mark.parametrize("groups", ["per_tensor", "per_layer"])
def test_grouped_grams_and_per_group_weights(groups, mode):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    named = [(n, p) for n, p in ref.named_parameters() if n.startswith("backbone")]
    assert [p for _, p in named] == list(ref.shared_parameters())
    keys = [n if groups == "per_tensor" else n.rpartition(".")[0] for n, _ in named]
    blocks = [
        [p for (_, p), k in zip(named, keys, strict=True) if k == key]
        for key in dict.fromkeys(keys)
    ]
    Js = [_jacobian(losses, block) for block in blocks]
    K = len(blocks)
    w = torch.arange(1.0, 1.0 + 3 * K, dtype=torch.float64).view(K, 3)
    balancer = _GroupedConstant(NAMES, w=w, groups=groups)
    TrainStep(model, TASKS, balancer, grad_mode=mode)(batch)
    G = balancer.seen[0]["gram"]
    assert G.shape == (K, 3, 3)
    for k, Jk in enumerate(Js):
        torch.testing.assert_close(G[k], Jk @ Jk.T)
    expected = torch.cat([Jk.T @ w[k] for k, Jk in enumerate(Js)])
    torch.testing.assert_close(_flat([p.grad for p in model.shared_parameters()]), expected)


class _GroupedConstant(_Constant):
    """Test-only: one weight row per parameter group [pymtl]."""

    needs = Needs.GRAM

    def __init__(self, tasks: Sequence[str], *, w: Tensor, groups: str) -> None:
        super().__init__(tasks, w=[1.0] * len(tasks))
        self.w, self.groups = w, groups


class _Direct(_Constant):
    """Test-only: returns its own update ``d`` (GradDrop / DB-MTL style) [pymtl]."""

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        weights = super().compute(losses, gram=gram, jacobian=jacobian)
        assert jacobian is not None
        d = (jacobian**2).sum(0)  # not of the form Jᵀw
        return attrs.evolve(weights, direct=d)


@pytest.mark.parametrize("needs", [Needs.JACOBIAN, Needs.REPRESENTATION_JACOBIAN])
def test_direct_update_replaces_the_weighted_combination(needs):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    x = batch["image"]
    z = ref.encode(x)
    losses = _losses(ref.decode(z, x.shape[-2:]), batch)
    shared = list(ref.shared_parameters())
    if needs is Needs.JACOBIAN:
        expected = (_jacobian(losses, shared) ** 2).sum(0)
    else:
        dz = (_jacobian(losses, [z]) ** 2).sum(0).view_as(z)
        expected = _flat(torch.autograd.grad(z, shared, dz, retain_graph=True))
    balancer = type("_D", (_Direct,), {"needs": needs})(NAMES, w=W, s=S)
    TrainStep(model, TASKS, balancer)(batch)
    torch.testing.assert_close(_flat([p.grad for p in model.shared_parameters()]), expected)


class _Layer(_Constant):
    """Test-only: asks for the Gram of one shared tensor [pymtl]."""

    needs = Needs.LAYER_GRAM


def test_layer_gram_is_the_gram_of_the_last_shared_weight(autograd_calls):
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    losses = _losses(ref(batch["image"]), batch)
    names = [(n, p) for n, p in ref.named_parameters() if n.startswith("backbone")]
    _name, W_last = [(n, p) for n, p in names if p.dim() > 1][-1]
    JW = _jacobian(losses, [W_last])
    total = sum(w * L for w, L in zip(W, losses, strict=True))
    expected = torch.autograd.grad(total, list(ref.parameters()), retain_graph=True)
    balancer = _Layer(NAMES, w=W)
    step = TrainStep(model, TASKS, balancer, grad_mode="batched")
    assert step.plan.mode == "batched"
    calls = autograd_calls()
    step(batch)
    assert calls == {"grad": 1, "backward": 1}
    torch.testing.assert_close(balancer.seen[0]["gram"], JW @ JW.T)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_engine_falls_back_to_one_backward_per_task(monkeypatch, capsys):
    model, batch = _model(), _batch()
    grad = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("vmap: no batching rule for this op")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    step = TrainStep(model, TASKS, _balancer(Needs.GRAM), grad_mode="batched")
    step(batch)
    assert "one backward per task" in step.describe()
    assert "no batching rule" in capsys.readouterr().err
    assert all(p.grad is not None for p in model.shared_parameters())


def test_gram_mode_runs_back_through_the_encoder_once_per_task(monkeypatch):
    model, batch = _model(), _batch()
    step = TrainStep(model, TASKS, _balancer(Needs.GRAM), grad_mode="sequential")
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


def test_chunk_parameters_packs_consecutive_sizes_under_the_limit():
    from pymtl.engine.gradients import chunk_parameters

    assert chunk_parameters([4, 4, 4, 10, 1], 8) == ((0, 2), (2, 3), (3, 4), (4, 5))
    assert chunk_parameters([1, 2, 3], 100) == ((0, 3),)
