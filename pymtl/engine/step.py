"""One training step: forward, per-task losses, the balancer, gradients [pymtl].

The step asks the balancer what it needs (``Balancer.needs``) and computes exactly that, once,
here, with the gradient engine of :mod:`pymtl.engine.gradients`:

* ``LOSSES``: weights from the detached losses, one backward of ``Σ_t w_t L_t + aux``.
  Equal and fixed weights cost one backward pass.
* ``GRAM`` / ``JACOBIAN``: the per-task gradients J [T, P] of the shared parameters (one
  batched backward, or one per task), ``G = gram(J)`` (one per parameter group when the
  balancer asks); the shared parameters receive ``Jᵀ w`` (or the balancer's own update), each
  task's own parameters ``s_t ∇θ_t L_t``. In ``gram`` mode J is never stored: G is folded
  chunk by chunk and the update is a weighted backward.
* ``LAYER_GRAM``: the same Gram for one shared tensor W, then one backward of ``Σ_t w_t L_t``.
* ``REPRESENTATION_*``: the same with respect to the shared representation Z: the decoder runs
  on a detached copy of Z, J_Z is taken there, and ``J_Zᵀ w`` is back-propagated through the
  encoder once.

**Distillation** (SPEC-methods §3): with a distillation loss and its teacher, the step also
reads the student's features at the loss's layers from the same forward pass, asks the frozen
teacher for its signals, and adds the per-task terms ``λ_t D_t`` to the objective outside the
balancing: their gradient is added to whatever the balancer makes of the task losses (one
backward of ``Σ_t w_t L_t + Σ_t λ_t D_t`` in ``LOSSES`` mode; an extra backward over the
retained graph otherwise, before Z's gradient is pushed through the encoder in the
representation modes).

Under ``torch.distributed`` the per-task gradients are averaged across processes before the
Gram matrix is built (SPEC-methods §0.1), and every gradient is averaged before the optimiser
step. The step never calls the optimiser: the loop does.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn

from pymtl.architectures.base import Architecture, split_outputs
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.distillation.base import DistillationLoss, Signals
from pymtl.engine import gradients
from pymtl.errors import PymtlError
from pymtl.ops.combine import combine
from pymtl.ops.gram import gram
from pymtl.tasks.base import Task

__all__ = ["NonFiniteLossError", "StepResult", "TrainStep"]

_GRAM = (Needs.GRAM, Needs.REPRESENTATION_GRAM, Needs.LAYER_GRAM)
_REPRESENTATION = (Needs.REPRESENTATION_GRAM, Needs.REPRESENTATION_JACOBIAN)


class NonFiniteLossError(PymtlError):
    """A task loss became NaN or infinite."""


@attrs.frozen(eq=False)
class StepResult:
    """What one step produced (detached)."""

    losses: Tensor  # [T], averaged over processes under torch.distributed
    weights: Weights
    distill: Tensor | None = None  # [T] terms λ_t D_t, process-averaged; None: no distillation


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average(tensors: Sequence[Tensor]) -> None:
    """All-reduce-average ``tensors`` in place across processes (no-op without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class TrainStep:
    """Computes losses and gradients for one batch as the balancer requires.

    Args:
        model: the architecture.
        tasks: the dataset's task declarations (model output keys).
        balancer: maps losses (and G / J) to weights.
        grad_mode: ``auto``, ``sequential``, ``batched`` or ``gram`` (see
            :mod:`pymtl.engine.gradients`).
        grad_memory_mb: memory budget of J in ``auto`` mode.
        distiller: a distillation loss (its parameters, e.g. adaptors, receive gradients).
        teacher: its frozen teacher (:class:`pymtl.engine.teacher.Teacher`); with
            ``distiller``.
    """

    def __init__(
        self,
        model: Architecture,
        tasks: Sequence[Task],
        balancer: Balancer,
        *,
        grad_mode: str = "auto",
        grad_memory_mb: float = 1024.0,
        distiller: DistillationLoss | None = None,
        teacher: Any = None,
    ) -> None:
        if (distiller is None) != (teacher is None):
            raise PymtlError("a distillation loss needs its teacher, and a teacher its loss")
        self.distiller, self.teacher = distiller, teacher
        self.layers = tuple(distiller.layers) if distiller is not None else ()
        self.model = model
        self.tasks = tuple(tasks)
        self.balancer = balancer
        needs = balancer.needs
        # parameters that are not shared: each task's own, and the balancer's
        self.own = [p for t in model.tasks for p in model.task_parameters(t) if p.requires_grad]
        self.own += [p for p in balancer.parameters() if p.requires_grad]
        self.wrt: list[Tensor] = []
        self._values: list[Tensor] | None = None
        self._per_task: list[Tensor] = []
        self.bounds: list[int] = []
        self.fallback_note = ""
        if needs in _REPRESENTATION and not model.has_shared_representation:
            raise PymtlError(
                f"balancer {balancer.name!r} needs the shared representation, but architecture "
                f"{model.name!r} has none; use an architecture with a shared encoder (e.g. hps)"
            )
        if needs not in _REPRESENTATION and needs is not Needs.LOSSES:
            names = {id(p): n for n, p in model.named_parameters()}
            shared = [(names[id(p)], p) for p in model.shared_parameters() if p.requires_grad]
            if not shared:
                raise PymtlError(
                    f"balancer {balancer.name!r} needs gradients of shared parameters, but "
                    f"architecture {model.name!r} shares none"
                )
            if needs is Needs.LAYER_GRAM:
                layer = balancer.layer(shared)
                shared = [(n, p) for n, p in shared if n == layer]
                if not shared:
                    raise PymtlError(
                        f"balancer {balancer.name!r}: layer {layer!r} is not a shared parameter "
                        f"of architecture {model.name!r}"
                    )
            self.wrt = [p for _, p in shared]
            self.bounds = gradients.group_bounds([n for n, _ in shared], self.wrt, balancer.groups)
        device = next(model.parameters()).device
        self.plan = gradients.plan_gradients(
            needs,
            self.wrt,
            len(self.tasks),
            mode=grad_mode,
            budget_mb=grad_memory_mb,
            device=device,
        )

    def describe(self) -> str:
        """One line on how gradients are computed (logged at the start of a run)."""
        mode = self.plan.mode + (f" ({self.fallback_note})" if self.fallback_note else "")
        return f"gradients: {mode}: {self.plan.reason}"

    def __call__(
        self,
        batch: Mapping[str, Tensor],
        *,
        progress: float = 0.0,
        indices: Sequence[int] | None = None,
    ) -> StepResult:
        """One step on ``batch``; ``progress`` (step / total steps) and ``indices`` (the
        batch's item numbers, for a cached teacher) reach the distillation loss only."""
        needs = self.balancer.needs
        x = batch["image"]
        z, z_leaf, outputs, features = self._forward(x)
        losses = self.losses(outputs, batch)
        distill = self._distill(outputs, features, batch, progress, indices)
        self._per_task, self._values = self._values or list(losses.unbind()), None
        seen = losses.detach().clone()
        _average([seen])  # every process gives the balancer the same (global-batch) losses
        self._observe_kpis(outputs, batch)
        if needs is Needs.LOSSES:
            weights = self.balancer(seen)
            self._backward_same(losses, weights, distill)
        elif needs is Needs.LAYER_GRAM:
            J = self._jacobian(losses, self.wrt)
            _average([J])
            weights = self.balancer(seen, gram=self._gram(J))
            self._backward_same(losses, weights, distill)
        elif needs in _REPRESENTATION:
            assert z is not None
            assert z_leaf is not None
            weights = self._representation_step(losses, seen, z_leaf)
            _distill_backward(distill)  # adds to z_leaf.grad before it reaches the encoder
            z.backward(z_leaf.grad)  # type: ignore[no-untyped-call]
        else:
            step = self._gram_step if self.plan.mode == "gram" else self._jacobian_step
            weights = step(losses, seen)
            _distill_backward(distill)
        self._per_task = []  # no reference to this step's graph outlives the step
        penalty = self.model.regularizer()
        if penalty is not None:  # on the architecture's own parameters, outside the balancing
            penalty.backward()  # type: ignore[no-untyped-call]
        if _world_size() > 1:
            _average([p.grad for p in self._trained() if p.grad is not None])
        if distill is not None:
            distill = distill.detach().clone()
            _average([distill])
        return StepResult(losses=seen, weights=weights, distill=distill)

    def _forward(
        self, x: Tensor
    ) -> tuple[Tensor | None, Tensor | None, dict[str, Tensor], dict[str, list[Tensor]]]:
        """Z and its detached leaf (representation modes), outputs, distillation features."""
        if self.balancer.needs in _REPRESENTATION:
            z, extra = self.model.encode_layers(x, self.layers)
            z_leaf = z.detach().requires_grad_()
            outputs = self.model.decode(z_leaf, x.shape[-2:])
            shared = [z_leaf if layer == "last" else extra[layer] for layer in self.layers]
            return z, z_leaf, outputs, dict.fromkeys(self.model.tasks, shared)
        if self.layers:
            signals = self.model.signals(x, self.layers)
            features = {t: list(f) for t, f in signals.features.items()}
            return None, None, dict(signals.outputs), features
        return None, None, self.model(x), {}

    def _distill(
        self,
        outputs: Mapping[str, Tensor],
        features: Mapping[str, Sequence[Tensor]],
        batch: Mapping[str, Tensor],
        progress: float,
        indices: Sequence[int] | None,
    ) -> Tensor | None:
        """[T] distillation terms of this batch, or None without a distillation loss."""
        if self.distiller is None:
            return None
        teacher = self.teacher.signals(batch["image"], indices)
        terms: Tensor = self.distiller(Signals(features, outputs), teacher, batch, progress)
        if not torch.isfinite(terms).all():
            bad = [f"{t.name}={v:g}" for t, v in zip(self.tasks, terms.tolist(), strict=True)]
            raise NonFiniteLossError(f"non-finite distillation term: {', '.join(bad)}")
        return terms

    def _observe_kpis(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        observe = getattr(self.balancer, "observe_kpis", None)
        if observe is not None and getattr(self.balancer, "kpi", None) == "batch":
            # balancers that weigh by task KPIs (DTP with kpi = "batch") see this batch's
            from pymtl.balancers.dtp import batch_kpis

            kpis = batch_kpis(self.tasks, {k: v.detach() for k, v in outputs.items()}, batch)
            _average([kpis])  # a NaN (unmeasured) task stays NaN on every process
            observe(kpis)

    def _trained(self) -> list[Tensor]:
        """Every parameter the step gives a gradient: the model's and the distiller's."""
        params: list[Tensor] = list(self.model.parameters())
        return params + (list(self.distiller.parameters()) if self.distiller is not None else [])

    @torch.no_grad()
    def losses_after(self, batch: Mapping[str, Tensor]) -> Tensor:
        """[T] losses of ``batch`` with the current weights (after the optimiser step),
        process-averaged; for balancers that learn from the loss decrease (FAMO)."""
        # same mode as the step (BatchNorm uses batch statistics, as FAMO's reference does),
        # but the running statistics are restored: this extra pass leaves no trace
        saved = [b.clone() for b in self.model.buffers()]
        try:
            losses = self.losses(self.model(batch["image"]), batch)
        finally:
            for b, s in zip(self.model.buffers(), saved, strict=True):
                b.copy_(s)
        _average([losses])
        return losses

    def losses(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """[T] task losses, in task order; a NaN or infinite loss stops the run."""
        values = []
        grouped = split_outputs(outputs, [t.name for t in self.tasks])
        for task in self.tasks:
            labelled, target = batch.get(f"{task.name}.mask"), batch[task.name]
            # deep supervision: intermediate predictions count with the task's weight
            parts = [task.loss(y, target, labelled) for y in grouped[task.name]]
            values.append(parts[0] if len(parts) == 1 else torch.stack(parts).sum())
        self._values = values  # the unstacked losses: see _jacobian
        losses = torch.stack(values)
        if not torch.isfinite(losses).all():
            bad = [
                f"{t.name}={v:g}"
                for t, v in zip(self.tasks, losses.tolist(), strict=True)
                if not torch.isfinite(torch.tensor(v))
            ]
            raise NonFiniteLossError(f"non-finite loss: {', '.join(bad)}")
        return losses

    # -- the modes ------------------------------------------------------------------------

    def _backward_same(self, losses: Tensor, weights: Weights, distill: Tensor | None) -> None:
        """One backward of ``Σ_t w_t L_t + aux (+ Σ_t λ_t D_t)``: only right when ``s = w``."""
        if weights.task is not weights.shared and not torch.equal(weights.task, weights.shared):
            raise PymtlError(
                f"balancer {self.balancer.name!r} declares needs = {self.balancer.needs.name} "
                "but returned task weights s different from the shared weights w; one backward "
                "pass can apply only one of them (declare needs = Needs.GRAM or JACOBIAN)"
            )
        total = (weights.shared.to(losses) * losses).sum()
        if weights.aux_loss is not None:
            total = total + weights.aux_loss
        if distill is not None:
            total = total + distill.sum()
        total.backward()  # type: ignore[no-untyped-call]

    def _jacobian(self, losses: Tensor, wrt: Sequence[Tensor]) -> Tensor:
        """J [T, Σ numel] in fp32 or fp64 (amp rows are upcast), batched when planned.

        One backward per task starts from that task's own (unstacked) loss: from the stacked
        vector, each backward would run through every task's head with zero gradients.
        """
        batched = self.plan.batched and not self.fallback_note
        per_task = self._per_task if not batched else losses
        try:
            J = gradients.jacobian(per_task, wrt, batched=batched)
        except RuntimeError as error:
            if not batched:
                raise
            # an op of this model has no batching rule: T backward calls from now on
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.fallback_note = f"one backward per task: the batched backward failed: {first}"
            print(f"pymtl: {self.describe()}", file=sys.stderr)
            J = gradients.jacobian(losses, wrt, batched=False)
        return J if J.dtype in (torch.float32, torch.float64) else J.float()

    def _gram(self, J: Tensor) -> Tensor:
        grouped = self.balancer.groups != "whole_model"
        with torch.autocast(J.device.type, enabled=False):  # the T×T maths stays fp32+
            return gradients.stacked_grams(J, self.bounds, grouped=grouped)

    def _weights(
        self, seen: Tensor, J: Tensor | None, G: Tensor | None, **extra: Tensor
    ) -> Weights:
        if self.balancer.needs in _GRAM:
            weights: Weights = self.balancer(seen, gram=G, **extra)
        else:
            weights = self.balancer(seen, jacobian=J, **extra)
        return weights

    def _own_backward(self, losses: Tensor, weights: Weights) -> None:
        """Task-specific (and balancer) parameters: ``s_t ∇θ_t L_t`` (+ the aux loss)."""
        task_total = (weights.task.to(losses) * losses).sum()
        if weights.aux_loss is not None:
            task_total = task_total + weights.aux_loss
        if self.own:
            torch.autograd.backward(task_total, inputs=self.own, retain_graph=True)

    def _jacobian_step(self, losses: Tensor, seen: Tensor) -> Weights:
        J = self._jacobian(losses, self.wrt)
        _average([J])  # the Gram of rank-averaged gradients (SPEC-methods §0.1)
        G = self._gram(J) if self.balancer.needs in _GRAM else None
        weights = self._weights(seen, J, G)
        self._own_backward(losses, weights)
        d = weights.direct if weights.direct is not None else self._combine(J, weights.shared)
        _set_grads(self.wrt, d.to(J.dtype))
        return weights

    def _gram_step(self, losses: Tensor, seen: Tensor) -> Weights:
        """``gram`` mode: G folded chunk by chunk, then weighted backward pass(es)."""
        grouped = self.balancer.groups != "whole_model"
        offsets = [0]
        for p in self.wrt:
            offsets.append(offsets[-1] + p.numel())
        K = len(self.bounds) - 1
        G = torch.zeros(
            K, len(self.tasks), len(self.tasks), dtype=torch.float64, device=losses.device
        )
        dtype = torch.float32
        for a, b in self.plan.chunks:
            J = self._jacobian(losses, self.wrt[a:b])
            dtype = J.dtype
            _average([J])
            lo, hi = offsets[a], offsets[b]
            for k in range(K):
                ga, gb = max(self.bounds[k], lo), min(self.bounds[k + 1], hi)
                if ga < gb:
                    with torch.autocast(J.device.type, enabled=False):
                        G[k] += gram(J[:, ga - lo : gb - lo]).to(G.device, torch.float64)
            del J
        G = G.to(device=losses.device, dtype=dtype)
        weights = self._weights(seen, None, G if grouped else G[0])
        self._own_backward(losses, weights)
        w = weights.shared.to(losses)
        for k in range(K):
            params = [
                p
                for p, start in zip(self.wrt, offsets, strict=False)
                if self.bounds[k] <= start < self.bounds[k + 1]
            ]
            row = w[k] if w.dim() == 2 else w
            torch.autograd.backward((row * losses).sum(), inputs=params, retain_graph=True)
        return weights

    def _representation_step(self, losses: Tensor, seen: Tensor, z_leaf: Tensor) -> Weights:
        J = self._jacobian(losses, [z_leaf])
        # Z is split by sample across processes: the global J_Z stacks the local ones, each
        # scaled by 1/W (the global loss averages the processes'), so G_Z = Σ_r G_r / W².
        G = None
        if self.balancer.needs is Needs.REPRESENTATION_GRAM:
            if getattr(self.balancer, "rep_reduce", "whole_batch") == "sum_batch":
                # Σ over the global batch = W · (process mean of the local sums / W)
                S = J.reshape(J.shape[0], z_leaf.shape[0], -1).sum(dim=1)
                _average([S])
                G = gram(S)
            else:
                G = gram(J)
                _average([G])
                G = G / _world_size()
        extra = {"representation": z_leaf.detach()} if self.balancer.wants_representation else {}
        weights = self._weights(seen, J, G, **extra)
        self._own_backward(losses, weights)
        d = weights.direct if weights.direct is not None else self._combine(J, weights.shared)
        z_leaf.grad = d.reshape(z_leaf.shape).to(z_leaf.dtype)
        return weights

    def _combine(self, J: Tensor, w: Tensor) -> Tensor:
        """``d = Jᵀ w``, group by group when ``w`` is [K, T]."""
        if w.dim() == 1:
            return combine(J, w.to(J))
        return combine(J, w.to(J), self.bounds)


def _set_grads(params: Sequence[Tensor], d: Tensor) -> None:
    """Each parameter's gradient is its slice of ``d`` (a view: no copy of the P-vector)."""
    offset = 0
    for p in params:
        p.grad = d[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()


def _distill_backward(distill: Tensor | None) -> None:
    """Add the distillation terms' gradients (the graph is kept: Z's backward may follow)."""
    if distill is not None:
        distill.sum().backward(retain_graph=True)  # type: ignore[no-untyped-call]


def zero_grad(model: nn.Module) -> None:
    """Drop every gradient (set to None) before the next step."""
    for p in model.parameters():
        p.grad = None
