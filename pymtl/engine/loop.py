"""``pymtl train``: the training loop [pymtl] (STYLE rule 10: a plain, readable loop).

build components → for each epoch: batches → :class:`~pymtl.engine.step.TrainStep` → optimiser
and LR schedule → log → evaluate → checkpoint; at the end ``metrics.json`` (with Δ_MTL against
stored single-task baselines when they exist) and plots. The run directory holds
``config.toml``, ``metrics.jsonl`` (one line per evaluation), ``metrics.json``,
``checkpoints/last.pt``, ``tb/`` (TensorBoard events) and ``plots/*.png``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist
from tqdm import tqdm

from pymtl.architectures.base import Architecture
from pymtl.balancers.base import Balancer
from pymtl.config import RunConfig, dump_toml
from pymtl.data.base import Dataset
from pymtl.distillation.base import DistillationLoss
from pymtl.engine import build, rundir
from pymtl.engine.checkpoint import load_checkpoint, save_checkpoint
from pymtl.engine.data import epoch_batches, loader
from pymtl.engine.distributed import init_distributed, rank_world, sync_model
from pymtl.engine.evaluate import evaluate
from pymtl.engine.step import StepResult, TrainStep, zero_grad
from pymtl.engine.summary import summarize
from pymtl.engine.teacher import setup_distillation
from pymtl.errors import PymtlError
from pymtl.plugins import Registry, get_registry

__all__ = ["train"]


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _prepare_dir(out: Path, config_text: str, resume: bool, overwrite: bool) -> None:
    checkpoint = out / "checkpoints" / "last.pt"
    if resume:
        if not checkpoint.is_file():
            raise PymtlError(f"--resume: no checkpoint at {checkpoint}")
        return
    if (out / "metrics.jsonl").exists() or checkpoint.exists():
        if not overwrite:
            raise PymtlError(
                f"run directory {str(out)!r} already holds a run; use --resume "
                "to continue it, --overwrite to replace it, or another --out"
            )
        if not (out / "config.toml").is_file():
            raise PymtlError(
                f"--overwrite: {str(out)!r} does not look like a run directory "
                "(no config.toml); not deleting it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(config_text)


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    registry: Registry | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``config`` into the run directory ``out``; returns the ``metrics.json`` record
    (an empty dict on processes other than the first under ``torchrun``).

    ``resume`` continues from ``out``'s checkpoint; ``overwrite`` replaces a finished run.
    """
    registry = registry or get_registry()
    out = Path(out)
    device, owns_group = init_distributed(config.device)
    try:
        return _train(config, out, resume, registry, progress, overwrite, device)
    finally:
        if owns_group:
            dist.destroy_process_group()


@attrs.define
class _Run:
    """A run being trained: its components and where it stands."""

    config: RunConfig
    out: Path
    device: torch.device
    digest: str
    model: Architecture
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: TrainStep
    train_set: Dataset
    per_epoch: int
    distiller: DistillationLoss | None = None
    rank: int = 0
    world: int = 1
    epoch: int = 0
    skip: int = 0
    global_step: int = 0
    images: int = 0
    sums: torch.Tensor = attrs.field(factory=lambda: torch.zeros(0))
    distill_sums: torch.Tensor = attrs.field(factory=lambda: torch.zeros(0))

    @property
    def total_steps(self) -> int:
        return self.per_epoch * self.config.train.epochs

    @property
    def main(self) -> bool:
        return self.rank == 0

    def checkpoint(self, in_epoch: int) -> None:
        """Save the position (``in_epoch`` steps into ``self.epoch``) on the first process."""
        if not self.main:
            return
        save_checkpoint(
            self.out / "checkpoints" / "last.pt",
            {
                "config_hash": self.digest,
                "epoch": self.epoch,
                "step_in_epoch": in_epoch,
                "global_step": self.global_step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "balancer": self.balancer.state_dict(),
                "rng": _rng_state(self.device),
                "epoch_sums": self.sums if in_epoch else torch.zeros_like(self.sums),
                **self._distill_state(in_epoch),
            },
        )

    def _distill_state(self, in_epoch: int) -> dict[str, Any]:
        if self.distiller is None:
            return {}
        sums = self.distill_sums if in_epoch else torch.zeros_like(self.distill_sums)
        return {"distill": self.distiller.state_dict(), "distill_sums": sums}

    def restore(self) -> None:
        state = load_checkpoint(self.out / "checkpoints" / "last.pt", config_hash=self.digest)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch, self.skip = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.sums = state["epoch_sums"].clone()
        if self.distiller is not None:
            if "distill" not in state:
                raise PymtlError(
                    f"checkpoint in {self.out} holds no distillation-loss state; it was not "
                    "written by this distillation run"
                )
            self.distiller.load_state_dict(state["distill"])
            self.distill_sums = state["distill_sums"].clone()


def _build_run(
    config: RunConfig, out: Path, registry: Registry, device: torch.device, digest: str
) -> tuple[_Run, Dataset]:
    """Every component of the run, and the evaluation split."""
    torch.manual_seed(config.seed)
    t = config.train
    train_set = build.build_dataset(config, registry, "train")
    eval_set = build.build_dataset(config, registry, t.eval_split)
    model = sync_model(build.build_model(config, registry, train_set).to(device), device)
    balancer = build.build_balancer(config, registry, train_set).to(device)
    per_epoch = len(epoch_batches(len(train_set), t.batch_size, seed=0, epoch=0, shuffle=False))
    per_epoch = min(per_epoch, t.steps_per_epoch) if t.steps_per_epoch else per_epoch
    if per_epoch == 0:
        raise PymtlError(
            f"train split has {len(train_set)} samples, fewer than one batch of {t.batch_size}"
        )
    distill = setup_distillation(
        config, registry, model, train_set, device, out=out, progress=sys.stderr.isatty()
    )
    distiller, teacher = distill if distill is not None else (None, None)
    optimizer, scheduler = build.build_optimizer(
        config,
        model,
        balancer,
        per_epoch * t.epochs,
        distiller.optimizer_groups() if distiller is not None else (),
    )
    if t.compile:
        model.compile()
    rank, world = rank_world()
    run = _Run(
        config=config,
        out=out,
        device=device,
        digest=digest,
        model=model,
        balancer=balancer,
        optimizer=optimizer,
        scheduler=scheduler,
        step=TrainStep(
            model,
            train_set.tasks,
            balancer,
            grad_mode=t.grad_mode,
            grad_memory_mb=t.grad_memory_mb,
            distiller=distiller,
            teacher=teacher,
        ),
        train_set=train_set,
        per_epoch=per_epoch,
        distiller=distiller,
        rank=rank,
        world=world,
        sums=torch.zeros(3, len(train_set.tasks), dtype=torch.float64),  # loss, weight, count
        distill_sums=torch.zeros(len(train_set.tasks), dtype=torch.float64),
    )
    return run, eval_set


def _train(
    config: RunConfig,
    out: Path,
    resume: bool,
    registry: Registry,
    progress: bool | None,
    overwrite: bool,
    device: torch.device,
) -> dict[str, Any]:
    rank, world = rank_world()
    progress = sys.stderr.isatty() and rank == 0 if progress is None else progress and rank == 0
    digest = build.config_hash(config, registry)
    if rank == 0:
        _prepare_dir(out, dump_toml(config, registry), resume, overwrite)
    if world > 1:
        dist.barrier()  # the run directory exists (or the error above stopped rank 0)
    run, eval_set = _build_run(config, out, registry, device, digest)
    if resume:
        run.restore()
        if run.main:
            rundir.truncate_jsonl(out / "metrics.jsonl", max_epoch=run.epoch)
    t = config.train
    if run.main and run.step.plan.mode != "losses":
        print(f"pymtl: {run.step.describe()}", file=sys.stderr)
    writer = _tensorboard(out) if run.main else None
    started = time.perf_counter()
    eval_batches = epoch_batches(
        len(eval_set),
        t.eval_batch_size or t.batch_size,
        seed=0,
        epoch=0,
        shuffle=False,
        drop_last=False,
    )
    while run.epoch < t.epochs:
        _train_epoch(run, writer, progress)
        run.epoch += 1
        run.balancer.on_epoch_end(run.epoch)
        if run.main:
            _evaluate_epoch(run, writer, loader(eval_set, eval_batches), started, progress)
        run.sums, run.distill_sums = torch.zeros_like(run.sums), torch.zeros_like(run.distill_sums)
        run.checkpoint(0)
        if world > 1:
            dist.barrier()
    if writer is not None:
        writer.close()
    if not run.main:
        return {}
    return summarize(
        config,
        registry,
        out,
        run.train_set.tasks,
        digest,
        wall=time.perf_counter() - started,
        images=run.images,
    )


def _evaluate_epoch(run: _Run, writer: Any, batches: Any, started: float, progress: bool) -> None:
    """Evaluate the epoch just trained; append its record to ``metrics.jsonl`` and log it."""
    t = run.config.train
    metrics = evaluate(
        run.model,
        batches,
        run.train_set.tasks,
        device=run.device,
        progress=progress,
        total=len(batches),
    )
    record = _epoch_record(run, started, t.eval_split, metrics)
    rundir.append_jsonl(run.out / "metrics.jsonl", record)
    _log_epoch(writer, record, run.train_set.tasks, t.epochs)


def _train_epoch(run: _Run, writer: Any, progress: bool) -> None:
    """The steps of ``run.epoch`` from ``run.skip`` on (mid-epoch checkpoints included)."""
    t, names = run.config.train, run.train_set.task_names
    if hasattr(run.train_set, "set_epoch"):
        run.train_set.set_epoch(run.epoch)
    batches = epoch_batches(
        len(run.train_set),
        t.batch_size,
        seed=run.config.seed,
        epoch=run.epoch,
        rank=run.rank,
        world=run.world,
    )[: run.per_epoch]
    bar = tqdm(
        total=run.per_epoch,
        initial=run.skip,
        desc=f"epoch {run.epoch + 1}/{t.epochs}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=t.amp)
    run.model.train()
    data = loader(run.train_set, batches[run.skip :], workers=t.num_workers)
    for i, batch in enumerate(data, start=run.skip):
        batch = {k: v.to(run.device) for k, v in batch.items()}
        with autocast:
            result = _step(run, batch, i, batches[i])
        _tally(run, result)
        if writer is not None:
            _log_step(writer, run.global_step, names, result)
        bar.update(1)
        bar.set_postfix(loss=f"{float(result.losses.sum()):.3g}")
        if (
            t.checkpoint_every
            and run.global_step % t.checkpoint_every == 0
            and i + 1 < run.per_epoch
        ):
            run.checkpoint(i + 1)
    bar.close()
    run.skip = 0


def _step(run: _Run, batch: dict[str, torch.Tensor], i: int, indices: list[int]) -> StepResult:
    """Step ``i`` of the epoch on ``batch`` (items ``indices``): gradients, optimiser, schedule."""
    for module in (run.model, run.balancer, run.distiller):
        if module is not None:
            zero_grad(module)
    try:
        result = run.step(batch, progress=run.global_step / run.total_steps, indices=indices)
    except PymtlError as exc:
        raise type(exc)(
            f"{exc} at epoch {run.epoch + 1}, step {i + 1} (global step {run.global_step + 1})"
        ) from None
    if run.config.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.grad_clip)
    run.optimizer.step()
    if run.balancer.wants_losses_after_step:
        run.balancer.after_step(result.losses, run.step.losses_after(batch))
    run.scheduler.step()
    run.global_step += 1
    run.images += batch["image"].shape[0] * run.world
    return result


def _tally(run: _Run, result: StepResult) -> None:
    """Add one step's losses, weights (and distillation terms) to the epoch's sums."""
    w = result.weights.shared.detach().to(torch.float64).cpu()
    run.sums += torch.stack([result.losses.cpu().double(), w, torch.ones_like(w)])
    if result.distill is not None:
        run.distill_sums += result.distill.detach().cpu().double()


def _log_step(writer: Any, step: int, names: Sequence[str], result: StepResult) -> None:
    """Per-task loss, weight and distillation term of one step (TensorBoard)."""
    weights = result.weights.shared.detach().to(torch.float64).cpu().tolist()
    for n, loss, weight in zip(names, result.losses.tolist(), weights, strict=True):
        writer.add_scalar(f"loss/{n}", loss, step)
        writer.add_scalar(f"weight/{n}", weight, step)
    if result.distill is not None:
        for n, term in zip(names, result.distill.tolist(), strict=True):
            writer.add_scalar(f"distill/{n}", term, step)


def _epoch_record(
    run: _Run, started: float, split: str, metrics: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of the epoch just trained (means of its steps)."""
    names, sums = run.train_set.task_names, run.sums
    count = sums[2].clamp_min(1)
    elapsed = time.perf_counter() - started
    record: dict[str, Any] = {
        "epoch": run.epoch,
        "step": run.global_step,
        "time_s": elapsed,
        "split": split,
        "train": {
            "loss": dict(zip(names, (sums[0] / count).tolist(), strict=True)),
            "weights": dict(zip(names, (sums[1] / count).tolist(), strict=True)),
            "total_loss": float((sums[0] / count).sum()),
            "lr": float(run.scheduler.get_last_lr()[0]),
            "images_per_s": run.images / max(elapsed, 1e-9),
        },
        "metrics": metrics,
    }
    if run.distiller is not None:
        means = (run.distill_sums / count).tolist()
        record["train"]["distill"] = dict(zip(names, means, strict=True))
    return record


def _log_epoch(writer: Any, record: dict[str, Any], tasks: Any, epochs: int) -> None:
    if writer is not None:
        for task, values in record["metrics"].items():
            for name, value in values.items():
                writer.add_scalar(f"{record['split']}/{task}/{name}", value, record["step"])
    line = " ".join(
        f"{t.name}.{t.primary}={record['metrics'][t.name][t.primary]:.4g}" for t in tasks
    )
    tqdm.write(
        f"epoch {record['epoch']}/{epochs} loss {record['train']['total_loss']:.4g} "
        f"{line} ({record['train']['images_per_s']:.0f} img/s)",
        file=sys.stderr,
    )


def _tensorboard(out: Path) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(out / "tb"), flush_secs=10)
