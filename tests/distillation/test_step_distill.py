"""The training step with a distillation loss: where the gradients go, in every balancer mode,
and the teacher cache's values."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor

from pymtl import Needs
from pymtl.architectures.stl import SingleTask
from pymtl.data.synthetic.config import SyntheticConfig
from pymtl.data.synthetic.dataset import SyntheticScenes
from pymtl.distillation.bam import BAM
from pymtl.distillation.base import Signals
from pymtl.distillation.kd4mtl import KD4MTL
from pymtl.engine.step import TrainStep
from pymtl.engine.teacher import Teacher, check_compatible
from pymtl.engine.teacher_cache import TeacherCache
from pymtl.errors import ConfigError, PymtlError
from tests.engine._step_helpers import NAMES, TASKS, S, W, _balancer, _batch, _losses, _model

MODES = [Needs.LOSSES, Needs.GRAM, Needs.JACOBIAN, Needs.REPRESENTATION_GRAM]


def _teacher(layers: tuple[str, ...]) -> Teacher:
    torch.manual_seed(5)
    model = _model(SingleTask).eval().requires_grad_(False)
    return Teacher(model=model, source=Path("in-memory"), layers=layers)


def _distiller(kind: str) -> KD4MTL | BAM:
    if kind == "kd4mtl":
        loss: KD4MTL | BAM = KD4MTL(TASKS, layers="mid+last", weights={"depth": 2.0})
    else:
        loss = BAM(TASKS)
    return loss.double()


def _setup(kind: str, needs: Needs) -> tuple[TrainStep, KD4MTL | BAM, Teacher]:
    model, loss = _model(), _distiller(kind)
    teacher = _teacher(loss.layers)
    loss.prepare(*check_compatible(model, teacher, loss, _batch()["image"]))
    s = None if needs in (Needs.LOSSES,) else S
    step = TrainStep(model, TASKS, _balancer(needs, s=s), distiller=loss, teacher=teacher)
    return step, loss, teacher


def _expected(step: TrainStep, loss: KD4MTL | BAM, teacher: Teacher, progress: float):
    """∇ of Σ_t w_t L_t + Σ_t λ_t D_t for shared parameters and the loss's own, s_t ∇L_t + ∇D
    for each task's, on copies of the model and the loss."""
    model, loss = copy.deepcopy(step.model), copy.deepcopy(loss)
    batch = _batch()
    student = model.signals(batch["image"], loss.layers)
    losses = _losses(dict(student.outputs), batch)
    terms = loss(student, teacher.signals(batch["image"]), batch, progress).sum()
    shared = list(model.shared_parameters())
    s = W if step.balancer.needs is Needs.LOSSES else S
    total = sum(w * L for w, L in zip(W, losses, strict=True)) + terms
    grads = {"shared": torch.autograd.grad(total, shared, retain_graph=True)}
    own = list(loss.parameters())
    grads["own"] = torch.autograd.grad(terms, own, retain_graph=True) if own else ()
    for t, name in enumerate(NAMES):
        params = list(model.task_parameters(name))
        grads[name] = torch.autograd.grad(s[t] * losses[t] + terms, params, retain_graph=True)
    return grads


@pytest.mark.parametrize("kind", ["kd4mtl", "bam"])
@pytest.mark.parametrize("needs", MODES, ids=lambda n: n.name)
def test_gradients_reach_student_and_loss_never_the_teacher(kind, needs):
    step, loss, teacher = _setup(kind, needs)
    expected = _expected(step, loss, teacher, progress=0.25)
    result = step(_batch(), progress=0.25)
    assert result.distill is not None
    assert result.distill.shape == (3,)
    got = [p.grad for p in step.model.shared_parameters()]
    for g, e in zip(got, expected["shared"], strict=True):
        torch.testing.assert_close(g, e)
    for name in NAMES:
        for p, e in zip(step.model.task_parameters(name), expected[name], strict=True):
            torch.testing.assert_close(p.grad, e)
    own = list(loss.parameters())
    assert (len(own) > 0) == (kind == "kd4mtl")  # KD4MTL's adaptors, one per task and layer
    for p, e in zip(own, expected["own"], strict=True):
        assert p.grad is not None
        assert p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, e)
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())


def test_distillation_terms_are_reported_per_task():
    step, loss, teacher = _setup("kd4mtl", Needs.LOSSES)
    batch = _batch()
    student = copy.deepcopy(step.model).signals(batch["image"], loss.layers)
    expected = copy.deepcopy(loss)(student, teacher.signals(batch["image"]), batch, 0.0)
    result = step(batch)
    torch.testing.assert_close(result.distill, expected.detach())
    assert result.distill[1] > 0  # depth carries λ = 2


def test_a_loss_without_its_teacher_is_refused():
    with pytest.raises(PymtlError, match="needs its teacher"):
        TrainStep(_model(), TASKS, _balancer(Needs.LOSSES), distiller=_distiller("bam"))


def _scenes(hflip: bool = False) -> SyntheticScenes:
    config = SyntheticConfig(
        image_size=16, train_size=6, tasks=("semseg", "depth", "count"), hflip=hflip
    )
    return SyntheticScenes.from_config(config)  # type: ignore[return-value]


def _live(model: SingleTask, dataset: SyntheticScenes, rows: list[int]) -> Signals:
    x = torch.stack([dataset[i]["image"] for i in rows])
    with torch.no_grad():
        return model.signals(x, ("last",))


def _stl(dataset: SyntheticScenes) -> SingleTask:
    torch.manual_seed(0)
    model = SingleTask(dataset.tasks, 3, head_channels=4, head_rates=(2,))
    return model.eval().requires_grad_(False)


def test_teacher_cache_holds_the_teachers_exact_signals(tmp_path):
    dataset = _scenes()
    model = _stl(dataset)
    calls = []

    def compute(x: Tensor) -> Signals:
        calls.append(x.shape[0])
        with torch.no_grad():
            return model.signals(x, ("last",))

    def build(identity: str) -> TeacherCache:
        return TeacherCache.open_or_build(
            tmp_path, identity, compute, dataset, outputs=True, layers=1, batch_size=4
        )

    cache = build("a")
    assert calls == [4, 2]  # every item once, in order, the last batch short
    rows = [4, 1, 5]
    got, want = cache.read(rows, torch.device("cpu")), _live(model, dataset, rows)
    for task in dataset.task_names:
        torch.testing.assert_close(got.features[task][0], want.features[task][0])
        torch.testing.assert_close(got.outputs[task], want.outputs[task])
    build("a")
    assert calls == [4, 2]  # same identity: opened, not recomputed
    build("b")
    assert calls == [4, 2, 4, 2]  # another teacher or dataset: recomputed


def test_teacher_cache_is_refused_for_an_augmented_split(tmp_path):
    dataset = _scenes(hflip=True)
    with pytest.raises(ConfigError, match=r"augmented.*dataset\.hflip=false"):
        TeacherCache.open_or_build(
            tmp_path, "a", None, dataset, outputs=False, layers=1, batch_size=4
        )
