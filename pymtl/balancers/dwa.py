"""Dynamic Weight Average (``dwa``): weights from the rate of change of the epoch-mean losses.

Reference: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019;
survey §5 (SPEC-methods §2.4) [S][C:lorenmt/mtan]. With ``L̄_t(e)`` the mean training loss of
task t over epoch e (0-based),

    r_t = L̄_t(e−1) / L̄_t(e−2),    w_t(e) = s_t(e) = T · softmax(r / τ)_t,

``w = 1`` in epochs 0 and 1, τ = 2, and the weights are constant within an epoch [S][C].
Scale convention "sum": the weights sum to T [pymtl].

Variant ``window = n`` [C:nash-mtl][R]: the ratio of the mean loss of the last n steps (the
current one included) to that of the n steps before, recomputed every step; ``w = 1`` until
2n steps have been seen (nash-mtl pads its history with ones instead and starts after n + 1
steps; pymtl waits for real losses). Off by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from pymtl.balancers.base import Balancer, Needs, Weights, constant_weights
from pymtl.hookspecs import hookimpl


def _positive_finite(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"balancer 'dwa': {attribute.name!r} must be a number (got {value!r})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"balancer 'dwa': {attribute.name!r} must be finite and > 0 (got {value!r})"
        )


def _window(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"balancer 'dwa': 'window' must be an integer >= 0 (0: epoch means) (got {value!r})"
        )


@attrs.frozen(kw_only=True)
class DynamicWeightAverageConfig:
    """Options of ``dwa``.

    Attributes:
        temperature: τ of the softmax; larger is closer to equal weights.
        window: 0 for the paper's epoch means; n > 0 for nash-mtl's per-step variant over
            the last 2n steps.
    """

    temperature: float = attrs.field(default=2.0, validator=_positive_finite)
    window: int = attrs.field(default=0, validator=_window)


class DynamicWeightAverage(Balancer):
    """Dynamic Weight Average: w = T·softmax(r/τ) of the epoch-mean loss ratios [S].

    Reference: Liu et al., CVPR 2019, Eq. 7 [C:lorenmt/mtan]. Each step adds the losses to the
    running sums of the current epoch; :meth:`on_epoch_end` turns them into that epoch's means
    and keeps the last two. Everything is in buffers, so a checkpoint taken in the middle of an
    epoch resumes with the same statistics. Under ``torch.distributed`` the step gives every
    process the same averaged losses, so the statistics agree.

    Args:
        tasks: task names, in loss order.
        temperature: τ.
        window: 0 (epoch means) or the per-step window n.

    Example:
        >>> import torch
        >>> b = DynamicWeightAverage(["seg", "depth"])
        >>> for epoch, losses in enumerate([[1.0, 1.0], [0.5, 1.0]], start=1):
        ...     _ = b(torch.tensor(losses)); b.on_epoch_end(epoch)
        >>> b(torch.tensor([0.4, 0.9])).shared  # 2·softmax([0.5, 1.0] / 2)
        tensor([0.8756, 1.1244])
    """

    name = "dwa"
    Config = DynamicWeightAverageConfig
    needs = Needs.LOSSES

    def __init__(self, tasks: Sequence[str], *, temperature: float = 2.0, window: int = 0) -> None:
        super().__init__(tasks)
        DynamicWeightAverageConfig(temperature=temperature, window=window)  # same validation
        self.temperature = float(temperature)
        self.window = window
        T, f64 = self.num_tasks, torch.float64
        self.register_buffer("epoch_sum", torch.zeros(T, dtype=f64))
        self.register_buffer("epoch_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("epoch_means", torch.zeros(2, T, dtype=f64))  # rows: e−2, e−1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("recent", torch.zeros(2 * window, T, dtype=f64))  # oldest first
        self.register_buffer("recent_steps", torch.zeros((), dtype=torch.int64))
        self.epoch_sum: Tensor
        self.epoch_steps: Tensor
        self.epoch_means: Tensor
        self.epochs_seen: Tensor
        self.recent: Tensor
        self.recent_steps: Tensor

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        L = losses.detach().to(device=self.epoch_sum.device, dtype=torch.float64)
        if self.window:
            return constant_weights(self._window_weights(L), losses)
        self.epoch_sum += L
        self.epoch_steps += 1
        if int(self.epochs_seen) < 2:
            return constant_weights(torch.ones(self.num_tasks), losses)
        return constant_weights(self._softmax(self.epoch_means[1], self.epoch_means[0]), losses)

    def on_epoch_end(self, epoch: int) -> None:
        """Close epoch ``epoch``: its mean losses become the newest of the two kept. An epoch
        without steps (or the ``window`` variant) leaves the statistics unchanged."""
        if self.window or int(self.epoch_steps) == 0:
            return
        self.epoch_means[0] = self.epoch_means[1]
        self.epoch_means[1] = self.epoch_sum / self.epoch_steps
        self.epochs_seen += 1
        self.epoch_sum.zero_()
        self.epoch_steps.zero_()

    def _window_weights(self, losses: Tensor) -> Tensor:
        n = self.window
        self.recent.copy_(torch.cat([self.recent[1:], losses[None]]))
        self.recent_steps += 1
        if int(self.recent_steps) < 2 * n:
            return torch.ones(self.num_tasks)
        return self._softmax(self.recent[n:].mean(dim=0), self.recent[:n].mean(dim=0))

    def _softmax(self, newer: Tensor, older: Tensor) -> Tensor:
        """``T · softmax((newer / older) / τ)``; a zero mean loss (a task never labelled in the
        period) gives ratio 0 over 0 = 0 rather than NaN."""
        ratio = newer / older.clamp_min(torch.finfo(older.dtype).tiny)
        return self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, temperature={self.temperature:g}, window={self.window}"


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [DynamicWeightAverage]
