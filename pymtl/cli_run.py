"""The run commands of the ``pymtl`` CLI: ``train``, ``eval``, ``baselines``, ``sweep``,
``compare`` (registered on :data:`pymtl.cli.main`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pymtl.cli import main, resolve_run, run_options

__all__ = ["baselines_cmd", "eval_cmd", "train_cmd"]


def _default_out(config: Any) -> Path:
    parts = [
        config.dataset.name if config.dataset else "data",
        config.arch.name if config.arch else "arch",
        config.balancer.name,
        *([config.distill.name] if config.distill else []),
        f"seed{config.seed}",
    ]
    return Path("runs") / "_".join(parts)


@main.command("train")
@run_options
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory [default: runs/DATASET_ARCH_BALANCER[_DISTILL]_seedN].",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option(
    "--compile", "compile_", is_flag=True, help="torch.compile the model (train.compile)."
)
@click.option("--amp", is_flag=True, help="Mixed-precision forward pass (train.amp).")
@click.option(
    "--teacher",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Teacher run for --distill (teacher.run): required by kdam; kd4mtl, bam and "
    "hinton_kd default to the single-task baselines store.",
)
@click.option(
    "--teacher-cache",
    is_flag=True,
    help="Compute the teacher's signals on the training split once, memory-mapped "
    "(teacher.cache); refused with augmentation.",
)
def train_cmd(
    out: Path | None,
    resume: bool,
    overwrite: bool,
    compile_: bool,
    amp: bool,
    teacher: Path | None,
    teacher_cache: bool,
    print_config: bool,
    **opts: Any,
) -> None:
    """Train a multi-task network and print its per-task results.

    Components come from the registry by name (--dataset, --arch, --balancer, --distill); their
    options from --config and --set. With --resume, the run's own config.toml is used.

    With --distill, the frozen teacher comes from an earlier run: `pymtl baselines` (same
    options) stores the single-task teachers of kd4mtl, bam and hinton_kd; kdam distils the
    multi-task run named by --teacher.
    """
    from pymtl.config import dump_toml
    from pymtl.engine import train
    from pymtl.engine.summary import results_table
    from pymtl.plugins import get_registry

    registry = get_registry()
    if resume and out is not None and opts["config_path"] is None:
        opts["config_path"] = out / "config.toml"
    opts["overrides"] = [
        *(["train.compile=true"] if compile_ else []),
        *(["train.amp=true"] if amp else []),
        # absolute: the run's config.toml must still find the teacher from another directory
        *([f"teacher.run={json.dumps(str(teacher.resolve()))}"] if teacher else []),
        *(["teacher.cache=true"] if teacher_cache else []),
        *opts["overrides"],
    ]
    config = resolve_run(registry, opts)
    if print_config:
        click.echo(dump_toml(config, registry), nl=False)
        return
    out = out or _default_out(config)
    record = train(config, out, resume=resume, registry=registry, overwrite=overwrite)
    if not record:  # not the first process of a torchrun job: rank 0 reports
        return
    click.echo(
        f"run {out}: {record['epochs']} epochs, {record['wall_time_s']:.1f} s, "
        f"{record['images_per_s']:.0f} img/s; {record['split']} results:"
    )
    click.echo(results_table(record))


@main.command("eval")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(["train", "val", "test"]),
    help="Split to evaluate.",
)
def eval_cmd(run: Path, split: str) -> None:
    """Evaluate a finished run's last checkpoint on a split (writes RUN/eval-SPLIT.json)."""
    from pymtl.engine.runs import evaluate_run
    from pymtl.engine.summary import results_table
    from pymtl.plugins import get_registry

    record = evaluate_run(run, get_registry(), split=split)
    click.echo(f"run {run} ({record['epochs']} epochs), {split} results:")
    click.echo(results_table(record))


@main.command("baselines")
@run_options
@click.option(
    "--seeds", "seeds", type=int, multiple=True, help="Seeds to train: --seeds 0 1 2 [default: 0]."
)
@click.argument("more_seeds", nargs=-1, type=int, metavar="")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs") / "baselines",
    show_default=True,
    help="Where the baseline runs are trained.",
)
def baselines_cmd(
    seeds: tuple[int, ...], more_seeds: tuple[int, ...], root: Path, print_config: bool, **opts: Any
) -> None:
    """Train the single-task baselines (stl, same backbone) and store their results.

    Later runs of the same dataset configuration and backbone report Δ_MTL against them.
    """
    from pymtl.engine.runs import train_baselines
    from pymtl.plugins import get_registry

    registry = get_registry()
    config = resolve_run(registry, opts)
    chosen = list(dict.fromkeys([*seeds, *more_seeds])) or [0]  # `--seeds 0 1 2` -> 0, 1, 2
    path = train_baselines(config, registry, chosen, root)
    click.echo(f"stored single-task baselines for seeds {chosen} in {path}")


def _csv(value: str | None, kind: type = str) -> list[Any]:
    return [kind(v) for v in value.replace(",", " ").split()] if value else []


@main.command("sweep")
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML base configuration, optionally with a [sweep] table.",
)
@click.option("--dataset", default=None, help="Dataset name.")
@click.option("--preset", default=None, help="A named configuration of the dataset.")
@click.option("--archs", default=None, help="Architectures, e.g. hps,stl.")
@click.option("--balancers", default=None, help="Balancers, e.g. ew,fixed.")
@click.option("--seeds", default=None, help="Seeds, e.g. 0,1,2.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of every run."
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs") / "sweep",
    show_default=True,
    help="Where the runs go.",
)
def sweep_cmd(
    config_path: Path | None,
    dataset: str | None,
    preset: str | None,
    archs: str | None,
    balancers: str | None,
    seeds: str | None,
    overrides: tuple[str, ...],
    root: Path,
) -> None:
    """Train a grid of architectures × balancers × seeds, then compare them.

    Resumable: finished runs are skipped and interrupted ones resume, so re-running the same
    command completes the grid. Ends with `pymtl compare` of every run of the grid.
    """
    from pymtl.cli import _preset
    from pymtl.config import load_document
    from pymtl.engine.sweep import grid_from_document, run_sweep
    from pymtl.plugins import get_registry

    registry = get_registry()
    doc = load_document(config_path) if config_path else {}
    if dataset:
        section = doc.get("dataset", {}) if doc.get("dataset", {}).get("name") == dataset else {}
        doc = {**doc, "dataset": {**section, "name": dataset}}
    if preset:
        name = doc.get("dataset", {}).get("name")
        if not name:
            raise click.UsageError("--preset needs --dataset")
        doc["dataset"] = {**_preset(registry.get("dataset", name), preset), **doc["dataset"]}
    grid = grid_from_document(
        doc, archs=_csv(archs), balancers=_csv(balancers), seeds=_csv(seeds, int)
    )
    runs = run_sweep(doc, grid, registry, root, overrides=overrides)
    _compare(runs, root)


@main.command("compare")
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the plots go [default: the runs' common parent].",
)
def compare_cmd(runs: tuple[Path, ...], out: Path | None) -> None:
    """Compare runs: per-task metrics and Δ_MTL mean ± std over seeds (paired by seed),
    with a bar chart and a performance-profile plot."""
    import os

    parents = [str(r.resolve().parent) for r in runs]
    _compare(list(runs), out or Path(os.path.commonpath(parents)))


def _compare(runs: list[Path], out: Path) -> None:
    from pymtl.reporting import compare_runs, format_table, plot_comparison

    comparison = compare_runs(runs)
    click.echo(format_table(comparison))
    for path in plot_comparison(comparison, out):
        click.echo(f"wrote {path}")


@main.command("grid")
@run_options
@click.option(
    "--weights",
    "weight_spec",
    multiple=True,
    required=True,
    metavar="TASK=V1,V2,...",
    help="Values to try for one task's weight (repeatable); other tasks keep 1.",
)
@click.option("--seeds", default="0", show_default=True, help="Seeds, e.g. 0,1,2.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs") / "grid",
    show_default=True,
    help="Where the runs go.",
)
def grid_cmd(
    weight_spec: tuple[str, ...], seeds: str, root: Path, print_config: bool, **opts: Any
) -> None:
    """Choose fixed task weights by grid search (survey §5): train `fixed` at every
    combination × seed, then rank by mean Δ_MTL and write the best as a config (best.toml).

    Δ_MTL is taken against stored single-task baselines if there are any, else against the
    equal-weights point. Select on val (the default eval split), report on test.
    """
    import tomllib

    import attrs

    from pymtl.config import dump_toml
    from pymtl.engine.grid import best_point, parse_weight_spec, run_grid
    from pymtl.plugins import get_registry

    registry = get_registry()
    spec = parse_weight_spec(weight_spec)
    base = resolve_run(registry, {**opts, "balancer": "fixed"})
    if print_config:
        click.echo(dump_toml(base, registry), nl=False)
        return
    doc = tomllib.loads(dump_toml(base, registry))
    points = run_grid(doc, spec, _csv(seeds, int), registry, root)
    best, scores, against = best_point(points)
    width = max(len(p.label) for p, _ in scores)
    click.echo(f"{'weights':<{width}}  Δ_MTL % (vs {against}, mean over seeds)")
    for point, score in sorted(scores, key=lambda s: s[1], reverse=True):
        mark = "  <- best" if point is best else ""
        click.echo(f"{point.label:<{width}}  {score:+.3f}{mark}")
    options = registry.get("balancer", "fixed").Config(weights=best.weights)
    chosen = attrs.evolve(base, balancer=attrs.evolve(base.balancer, options=options))
    (root / "best.toml").write_text(dump_toml(chosen, registry))
    click.echo(f"wrote {root / 'best.toml'} (train with: pymtl train -c {root / 'best.toml'})")
