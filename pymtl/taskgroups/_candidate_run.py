"""One candidate of ``pymtl group train``: train it, then keep its per-task losses [S][pymtl].

Reference: SPEC-methods §4.1 (Standley et al., ICML 2020 [S]): a candidate's score on a task
is its loss on that task. pymtl measures it as the task's own training loss
(:meth:`pymtl.tasks.base.Task.loss` on the final prediction), averaged over a split's batches
weighted by batch size, from the finished run's last checkpoint [pymtl]. The run directory
keeps it in ``group-losses.json`` (:data:`LOSSES_FILE`) with the run's config hash, the
network's multiply-adds per image and the seconds spent, so a re-run reads it instead of
training: a finished candidate is skipped, one with a checkpoint resumes from it, and one
trained with another configuration is refused. :func:`run_candidates` trains the unfinished
ones in this process or in ``workers`` spawned processes, each with
``torch.set_num_threads(max(1, cores // workers))`` and a registry of its own
(:func:`pymtl.plugins.get_registry`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs
import torch

from pymtl.config import RunConfig
from pymtl.data.base import Dataset
from pymtl.engine import build, rundir
from pymtl.engine.checkpoint import load_checkpoint
from pymtl.engine.data import epoch_batches, loader
from pymtl.engine.loop import train
from pymtl.errors import PymtlError
from pymtl.plugins import Registry, get_registry

__all__ = [
    "LOSSES_FILE",
    "CandidateJob",
    "network_macs",
    "read_losses",
    "run_candidates",
    "split_losses",
    "train_candidate",
]

LOSSES_FILE = "group-losses.json"
"""The file in a candidate's run directory that marks it finished and holds its losses."""
_FORMAT = "pymtl-group-losses"
_SPLITS = ("val", "test")


@attrs.frozen
class CandidateJob:
    """A candidate to train: its name, run directory, configuration and config hash."""

    name: str
    run_dir: Path
    config: RunConfig
    config_hash: str

    @classmethod
    def make(cls, name: str, run_dir: Path, config: RunConfig, registry: Registry) -> CandidateJob:
        """A job with the config hash of ``config`` resolved by ``registry``."""
        return cls(name, Path(run_dir), config, build.config_hash(config, registry))


@torch.no_grad()
def _mean_losses(model: torch.nn.Module, dataset: Dataset, batch_size: int) -> dict[str, float]:
    device = next(model.parameters()).device
    batches = epoch_batches(
        len(dataset), batch_size, seed=0, epoch=0, shuffle=False, drop_last=False
    )
    sums = dict.fromkeys(dataset.task_names, 0.0)
    count = 0
    for batch in loader(dataset, batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(batch["image"])
        n = int(batch["image"].shape[0])
        for task in dataset.tasks:
            labelled = batch.get(f"{task.name}.mask")
            loss = task.loss(outputs[task.name].float(), batch[task.name], labelled)
            sums[task.name] += float(loss) * n
        count += n
    if count == 0:
        raise PymtlError(f"split {getattr(dataset, 'split', '?')!r} has no samples to score")
    return {name: total / count for name, total in sums.items()}


def split_losses(
    config: RunConfig, registry: Registry, run_dir: Path, splits: Sequence[str] = _SPLITS
) -> dict[str, dict[str, float]]:
    """``{split: {task: loss}}`` of the run's last checkpoint (see the module docstring).

    Raises:
        CheckpointError: no checkpoint, or it belongs to another configuration.
    """
    state = load_checkpoint(
        run_dir / "checkpoints" / "last.pt", config_hash=build.config_hash(config, registry)
    )
    model: torch.nn.Module | None = None
    out = {}
    for split in splits:
        dataset = build.build_dataset(config, registry, split)
        if model is None:
            model = build.build_model(config, registry, dataset).to(torch.device(config.device))
            model.load_state_dict(state["model"])
            model.eval()
        t = config.train
        out[split] = _mean_losses(model, dataset, t.eval_batch_size or t.batch_size)
    return out


def network_macs(config: RunConfig, registry: Registry) -> int:
    """Multiply-adds per image of ``config``'s network (:func:`pymtl.engine.info.measure`)."""
    from pymtl.engine.info import measure

    return measure(config, registry, batch_size=2, split="val").macs


def read_losses(job: CandidateJob) -> dict[str, Any] | None:
    """The stored record of a finished candidate, or None when it is not finished.

    Raises:
        PymtlError: the record is unreadable, or the run was trained with another config.
    """
    path = job.run_dir / LOSSES_FILE
    if not path.is_file():
        return None
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PymtlError(f"{str(path)!r} is not valid JSON ({exc}); delete it to redo") from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise PymtlError(f"{str(path)!r} is not a {_FORMAT} record; delete it to redo")
    if record.get("config_hash") != job.config_hash:
        raise PymtlError(
            f"candidate {job.name!r}: {str(job.run_dir)!r} was trained with another "
            f"configuration (config hash {record.get('config_hash')}, expected "
            f"{job.config_hash}); use another --root or delete that run directory"
        )
    return record


def train_candidate(job: CandidateJob, registry: Registry) -> dict[str, Any]:
    """Train (or resume, or only score, when its run finished) one candidate; write and
    return its record."""
    run, config = job.run_dir, job.config
    started = time.perf_counter()
    if not (run / "metrics.json").is_file():
        resume = (run / "checkpoints" / "last.pt").is_file()
        train(config, run, resume=resume, registry=registry, progress=False, overwrite=not resume)
    record = {
        "format": _FORMAT,
        "version": 1,
        "candidate": job.name,
        "config_hash": job.config_hash,
        "tasks": list(config.dataset.options.tasks) if config.dataset else [],
        "losses": split_losses(config, registry, run),
        "macs": network_macs(config, registry),
        "seconds": time.perf_counter() - started,
    }
    rundir.write_json(run / LOSSES_FILE, record)
    return record


def _child(job: CandidateJob, threads: int) -> dict[str, Any]:
    """Entry point of a spawned worker process."""
    torch.set_num_threads(threads)
    return train_candidate(job, get_registry())


def _say(text: str) -> None:
    print(f"group train: {text}", file=sys.stderr, flush=True)


def _done_line(job: CandidateJob, record: dict[str, Any]) -> str:
    val = ", ".join(f"{t} {v:.4g}" for t, v in record["losses"]["val"].items())
    return f"{job.name}: trained in {record['seconds']:.1f} s ({job.run_dir}); val loss {val}"


def _failed(job: CandidateJob, exc: BaseException) -> None:
    _say(f"candidate {job.name!r} ({job.run_dir}) failed: {type(exc).__name__}: {exc}")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_candidates(
    jobs: Sequence[CandidateJob], *, registry: Registry, workers: int = 1
) -> list[dict[str, Any]]:
    """The records of ``jobs``, in order: read for finished candidates, trained for the
    others (one progress line each on standard error). A failing candidate is reported by
    name and its exception re-raised (the pending ones are cancelled)."""
    records = [read_losses(job) for job in jobs]  # refuses a foreign run before training
    finished = [i for i, r in enumerate(records) if r is not None]
    for count, i in enumerate(finished, start=1):
        _say(f"[{count}/{len(jobs)}] {jobs[i].name}: finished earlier, skipped")
    pending = [i for i, r in enumerate(records) if r is None]
    if workers == 1 or len(pending) <= 1:
        _run_here(jobs, pending, records, registry)
    else:
        _run_pool(jobs, pending, records, workers)
    return [r for r in records if r is not None]


def _run_here(
    jobs: Sequence[CandidateJob],
    pending: Sequence[int],
    records: list[dict[str, Any] | None],
    registry: Registry,
) -> None:
    count = len(jobs) - len(pending)
    for i in pending:
        try:
            record = train_candidate(jobs[i], registry)
        except BaseException as exc:
            _failed(jobs[i], exc)
            raise
        records[i] = record
        count += 1
        _say(f"[{count}/{len(jobs)}] {_done_line(jobs[i], record)}")


def _run_pool(
    jobs: Sequence[CandidateJob],
    pending: Sequence[int],
    records: list[dict[str, Any] | None],
    workers: int,
) -> None:
    threads = max(1, _cores() // workers)
    count = len(jobs) - len(pending)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context)
    futures: dict[Future[dict[str, Any]], int] = {
        pool.submit(_child, jobs[i], threads): i for i in pending
    }
    try:
        for future in as_completed(futures):
            i = futures[future]
            try:
                record = future.result()
            except BaseException as exc:
                _failed(jobs[i], exc)
                raise
            records[i] = record
            count += 1
            _say(f"[{count}/{len(jobs)}] {_done_line(jobs[i], record)}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
