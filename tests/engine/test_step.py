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
from pymtl.architectures.base import aux_key
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


class _DeepSupervised(HardSharing):
    """Test-only: hps that, in training mode, adds a second ("initial") prediction per task."""

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        out = super().decode(z, size)
        if self.training:
            out.update({aux_key(n, "initial"): 0.5 * y for n, y in list(out.items())})
        return out


def test_deep_supervision_adds_to_its_tasks_loss():
    model, batch = _model(_DeepSupervised).train(), _batch()
    step = TrainStep(model, TASKS, _balancer(Needs.LOSSES))
    outputs = model(batch["image"])
    assert sorted(outputs) == sorted(NAMES + [f"{n}/initial" for n in NAMES])
    got = step.losses(outputs, batch)
    plain = {k: v for k, v in outputs.items() if "/" not in k}
    halves = {k: 0.5 * v for k, v in plain.items()}
    expected = torch.stack(_losses(plain, batch)) + torch.stack(_losses(halves, batch))
    torch.testing.assert_close(got, expected)


def test_outputs_naming_no_task_are_refused():
    model, batch = _model(), _batch()
    outputs = dict(model(batch["image"]))
    step = TrainStep(model, TASKS, _balancer(Needs.LOSSES))
    with pytest.raises(ValueError, match=r"'edges/initial'.*neither a task"):
        step.losses({**outputs, "edges/initial": outputs["depth"]}, batch)
    del outputs["depth"]
    with pytest.raises(ValueError, match="no output for task 'depth'"):
        step.losses(outputs, batch)


class _Penalised(HardSharing):
    """Test-only: hps with a regulariser 3·Σθ on its first backbone parameter."""

    def regularizer(self) -> Tensor | None:
        return 3.0 * next(self.backbone.parameters()).sum()


@pytest.mark.parametrize("needs", [Needs.LOSSES, Needs.GRAM])
def test_architecture_regularizer_adds_its_gradient(needs):
    batch = _batch()
    plain, penalised = _model(), _model(_Penalised)
    for model in (plain, penalised):
        TrainStep(model, TASKS, _balancer(needs, w=W, s=W))(batch)
    first = [next(m.backbone.parameters()).grad for m in (plain, penalised)]
    torch.testing.assert_close(first[1], first[0] + 3.0)
    rest = zip(list(plain.parameters())[1:], list(penalised.parameters())[1:], strict=True)
    assert all(torch.equal(a.grad, b.grad) for a, b in rest)


def test_sum_batch_representation_gram_sums_over_the_batch_first():
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    x = batch["image"]
    z = ref.encode(x)
    JZ = _jacobian(_losses(ref.decode(z, x.shape[-2:]), batch), [z])
    summed = JZ.reshape(3, x.shape[0], -1).sum(dim=1)  # [T, |z|]
    balancer = _balancer(Needs.REPRESENTATION_GRAM, w=W, s=S)
    balancer.rep_reduce = "sum_batch"
    TrainStep(model, TASKS, balancer)(batch)
    torch.testing.assert_close(balancer.seen[0]["gram"], summed @ summed.T)
