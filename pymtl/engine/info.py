"""Resource figures of an architecture on a dataset: ``pymtl info`` [pymtl].

The survey compares architectures by parameters, multiply-adds and memory (Vandenhende et al.,
TPAMI 2021, Table V [S]); :func:`measure` gives the same figures for any registered
architecture at the dataset's input size, so users can build such tables for their setting:

* **parameters**: all trainable ones, split into shared and per task (the architecture's own
  partition, as the balancers see it);
* **multiply-adds**: of one forward pass of one sample in eval mode, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (multiply-adds = FLOPs / 2 for the
  convolutions and matrix products it counts; elementwise ops, normalisation and pooling are
  not counted, as in the survey's figures). PAP-Net's ``pymtl::pap_attention`` is counted with
  its own formula (:func:`_pap_attention_flops`);
* **peak training memory**: of one training step (forward with the deep-supervision outputs,
  backward of the summed task losses, an Adam step) on a batch of ``batch_size``, measured:
  on CUDA by ``torch.cuda.max_memory_allocated`` above what was allocated before the step; on
  CPU by torch's memory tracker (``torch.distributed._tools.mem_tracker.MemTracker``, which
  follows every tensor storage: parameters, gradients, optimiser state, activations and
  temporaries) at its peak. The figure includes the parameters themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from pymtl.architectures.base import Architecture, split_outputs
from pymtl.config import RunConfig
from pymtl.data.base import Dataset
from pymtl.engine import build
from pymtl.plugins import Registry

__all__ = ["ArchitectureInfo", "format_infos", "measure"]


@attrs.frozen
class ArchitectureInfo:
    """The figures :func:`measure` reports for one architecture (see the module docstring)."""

    arch: str
    backbone: str
    input_size: tuple[int, int]
    params: int
    shared_params: int
    task_params: dict[str, int]
    macs: int
    peak_train_bytes: int
    batch_size: int
    device: str


def _count(params: Any) -> int:
    return sum(p.numel() for p in params if p.requires_grad)


def _registered_pap_formula() -> None:
    import pymtl.ops.pap  # noqa: F401  (registers the op)

    if getattr(_registered_pap_formula, "done", False):
        return

    @register_flop_formula(torch.ops.pymtl.pap_attention)
    def _pap_attention_flops(
        f_shape: Sequence[int], v_shape: Sequence[int], *args: Any, **kw: Any
    ) -> int:
        B, T, N, Cq = f_shape
        Cv = v_shape[-1]
        return int(B * T * (2 * N * N * Cq + 2 * N * N * Cv))  # logits + applying them

    _registered_pap_formula.done = True  # type: ignore[attr-defined]


def _macs(model: Architecture, x: torch.Tensor) -> int:
    _registered_pap_formula()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops()) // 2


def _train_step(model: Architecture, dataset: Dataset, batch: Mapping[str, torch.Tensor]) -> None:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    outputs = model(batch["image"])
    grouped = split_outputs(outputs, [t.name for t in dataset.tasks])
    total = sum(
        task.loss(y, batch[task.name], batch.get(f"{task.name}.mask"))
        for task in dataset.tasks
        for y in grouped[task.name]
    )
    assert isinstance(total, torch.Tensor)
    total.backward()  # type: ignore[no-untyped-call]
    opt.step()


def _peak_memory(model: Architecture, dataset: Dataset, batch: Mapping[str, torch.Tensor]) -> int:
    device = batch["image"].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        _train_step(model, dataset, batch)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        _train_step(model, dataset, batch)
    peak = tracker.get_tracker_snapshot("peak")
    return int(sum(v["Total"] for v in peak.values()))


def measure(
    config: RunConfig, registry: Registry, *, batch_size: int = 8, split: str = "val"
) -> ArchitectureInfo:
    """Parameters, multiply-adds and peak training memory of ``config``'s architecture on its
    dataset's input size (the first ``batch_size`` samples of ``split``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = build.build_dataset(config, registry, split)
    if len(dataset) < batch_size:
        raise ValueError(
            f"the {split} split has {len(dataset)} samples, fewer than batch_size={batch_size}"
        )
    torch.manual_seed(config.seed)
    model = build.build_model(config, registry, dataset)
    device = torch.device(config.device)
    model.to(device)
    samples = [dataset[i] for i in range(batch_size)]
    batch = {k: v.to(device) for k, v in torch.utils.data.default_collate(samples).items()}
    x = batch["image"]
    macs = _macs(model, x[:1])
    peak = _peak_memory(model, dataset, batch)
    options = config.arch.options if config.arch else None
    section = getattr(options, "backbone", None)
    return ArchitectureInfo(
        arch=model.name,
        backbone=getattr(section, "name", "-"),
        input_size=(int(x.shape[-2]), int(x.shape[-1])),
        params=_count(model.parameters()),
        shared_params=_count(model.shared_parameters()),
        task_params={t: _count(model.task_parameters(t)) for t in model.tasks},
        macs=macs,
        peak_train_bytes=peak,
        batch_size=batch_size,
        device=str(device),
    )


def _si(value: float, unit: str) -> str:
    if value == 0:
        return f"0 {unit}".strip()
    k = min(int(math.log10(abs(value)) // 3), 4)
    return f"{value / 10 ** (3 * k):.3g} {' kMGT'[k].strip()}{unit}"


def format_infos(infos: Sequence[ArchitectureInfo], fmt: str = "text") -> str:
    """A table of ``infos`` as aligned ``text`` or ``markdown`` (one row per architecture)."""
    head = ["arch", "backbone", "input", "params", "shared", "MACs/sample", "peak train mem"]
    rows = [
        [
            i.arch,
            i.backbone,
            f"{i.input_size[0]}×{i.input_size[1]}",
            _si(i.params, ""),
            _si(i.shared_params, ""),
            _si(i.macs, ""),
            f"{i.peak_train_bytes / 2**20:.1f} MiB (batch {i.batch_size}, {i.device})",
        ]
        for i in infos
    ]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    return "".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in [head, *rows]
    )
