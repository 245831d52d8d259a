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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from pymtl.config import RunConfig, dump_toml
from pymtl.engine import build, rundir
from pymtl.engine.checkpoint import load_checkpoint, save_checkpoint
from pymtl.engine.data import epoch_batches, loader
from pymtl.engine.distributed import init_distributed, rank_world, sync_model
from pymtl.engine.evaluate import evaluate
from pymtl.engine.step import TrainStep, zero_grad
from pymtl.engine.summary import summarize
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
    main = rank == 0
    progress = sys.stderr.isatty() and main if progress is None else progress and main
    digest = build.config_hash(config, registry)
    if main:
        _prepare_dir(out, dump_toml(config, registry), resume, overwrite)
    if world > 1:
        dist.barrier()  # the run directory exists (or the error above stopped rank 0)
    torch.manual_seed(config.seed)
    train_set = build.build_dataset(config, registry, "train")
    eval_set = build.build_dataset(config, registry, config.train.eval_split)
    model = sync_model(build.build_model(config, registry, train_set).to(device), device)
    balancer = build.build_balancer(config, registry, train_set).to(device)
    t = config.train
    per_epoch = len(epoch_batches(len(train_set), t.batch_size, seed=0, epoch=0, shuffle=False))
    per_epoch = min(per_epoch, t.steps_per_epoch) if t.steps_per_epoch else per_epoch
    if per_epoch == 0:
        raise PymtlError(
            f"train split has {len(train_set)} samples, fewer than one batch of {t.batch_size}"
        )
    optimizer, scheduler = build.build_optimizer(config, model, balancer, per_epoch * t.epochs)
    if t.compile:
        model.compile()
    step = TrainStep(model, train_set.tasks, balancer)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.amp)
    epoch, skip, global_step = 0, 0, 0
    names = train_set.task_names
    sums = torch.zeros(3, len(names), dtype=torch.float64)  # epoch sums: loss, weight, count
    if resume:
        state = load_checkpoint(out / "checkpoints" / "last.pt", config_hash=digest)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        balancer.load_state_dict(state["balancer"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        epoch, skip, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        sums = state["epoch_sums"].clone()
        if main:
            rundir.truncate_jsonl(out / "metrics.jsonl", max_epoch=epoch)

    def checkpoint(ep: int, in_epoch: int) -> None:
        if main:
            save_checkpoint(
                out / "checkpoints" / "last.pt",
                {
                    "config_hash": digest,
                    "epoch": ep,
                    "step_in_epoch": in_epoch,
                    "global_step": global_step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "balancer": balancer.state_dict(),
                    "rng": _rng_state(device),
                    "epoch_sums": sums if in_epoch else torch.zeros_like(sums),
                },
            )

    writer = _tensorboard(out) if main else None
    started, images = time.perf_counter(), 0
    eval_batches = epoch_batches(
        len(eval_set),
        t.eval_batch_size or t.batch_size,
        seed=0,
        epoch=0,
        shuffle=False,
        drop_last=False,
    )
    while epoch < t.epochs:
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        batches = epoch_batches(
            len(train_set), t.batch_size, seed=config.seed, epoch=epoch, rank=rank, world=world
        )[:per_epoch]
        bar = tqdm(
            total=per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            unit="step",
            disable=not progress,
            leave=False,
        )
        model.train()
        for i, batch in enumerate(
            loader(train_set, batches[skip:], workers=t.num_workers), start=skip
        ):
            batch = {k: v.to(device) for k, v in batch.items()}
            zero_grad(model)
            zero_grad(balancer)
            try:
                with autocast:
                    result = step(batch)
            except PymtlError as exc:
                raise type(exc)(
                    f"{exc} at epoch {epoch + 1}, step {i + 1} (global step {global_step + 1})"
                ) from None
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            if balancer.wants_losses_after_step:
                balancer.after_step(result.losses, step.losses_after(batch))
            scheduler.step()
            global_step += 1
            images += batch["image"].shape[0] * world
            w = result.weights.shared.detach().to(torch.float64).cpu()
            sums += torch.stack([result.losses.cpu().double(), w, torch.ones_like(w)])
            if writer is not None:
                for n, loss, weight in zip(names, result.losses.tolist(), w.tolist(), strict=True):
                    writer.add_scalar(f"loss/{n}", loss, global_step)
                    writer.add_scalar(f"weight/{n}", weight, global_step)
            bar.update(1)
            bar.set_postfix(loss=f"{float(result.losses.sum()):.3g}")
            if t.checkpoint_every and global_step % t.checkpoint_every == 0 and i + 1 < per_epoch:
                checkpoint(epoch, i + 1)
        bar.close()
        skip = 0
        epoch += 1
        balancer.on_epoch_end(epoch)
        epoch_sums, sums = sums, torch.zeros_like(sums)
        if main:
            metrics = evaluate(
                model,
                loader(eval_set, eval_batches),
                train_set.tasks,
                device=device,
                progress=progress,
                total=len(eval_batches),
            )
            record = _epoch_record(
                epoch,
                global_step,
                started,
                images,
                epoch_sums,
                names,
                scheduler,
                t.eval_split,
                metrics,
            )
            rundir.append_jsonl(out / "metrics.jsonl", record)
            _log_epoch(writer, record, train_set.tasks, t.epochs)
        checkpoint(epoch, 0)
        if world > 1:
            dist.barrier()
    if writer is not None:
        writer.close()
    if not main:
        return {}
    return summarize(
        config,
        registry,
        out,
        train_set.tasks,
        digest,
        wall=time.perf_counter() - started,
        images=images,
    )


def _epoch_record(
    epoch: int,
    global_step: int,
    started: float,
    images: int,
    sums: torch.Tensor,
    names: tuple[str, ...],
    scheduler: Any,
    split: str,
    metrics: dict[str, dict[str, float]],
) -> dict[str, Any]:
    count = sums[2].clamp_min(1)
    elapsed = time.perf_counter() - started
    return {
        "epoch": epoch,
        "step": global_step,
        "time_s": elapsed,
        "split": split,
        "train": {
            "loss": dict(zip(names, (sums[0] / count).tolist(), strict=True)),
            "weights": dict(zip(names, (sums[1] / count).tolist(), strict=True)),
            "total_loss": float((sums[0] / count).sum()),
            "lr": float(scheduler.get_last_lr()[0]),
            "images_per_s": images / max(elapsed, 1e-9),
        },
        "metrics": metrics,
    }


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
