"""The run commands of the ``pymtl`` CLI: ``train``, ``eval``, ``baselines``, ``sweep``,
``compare`` (registered on :data:`pymtl.cli.main`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pymtl.cli import main, resolve_run, run_options

__all__ = ["baselines_cmd", "eval_cmd", "train_cmd"]




def _default_out(config: Any) -> Path:
    parts = [config.dataset.name if config.dataset else "data", config.arch.name if config.arch
             else "arch", config.balancer.name, f"seed{config.seed}"]
    return Path("runs") / "_".join(parts)


@main.command("train")
@run_options
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: runs/DATASET_ARCH_BALANCER_seedN].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (train.compile).")
@click.option("--amp", is_flag=True, help="Mixed-precision forward pass (train.amp).")
def train_cmd(out: Path | None, resume: bool, compile_: bool, amp: bool, print_config: bool,
              **opts: Any) -> None:
    """Train a multi-task network and print its per-task results.

    Components come from the registry by name (--dataset, --arch, --balancer, --distill); their
    options from --config and --set. With --resume, the run's own config.toml is used.
    """
    from pymtl.config import dump_toml
    from pymtl.engine import train
    from pymtl.engine.summary import results_table
    from pymtl.plugins import get_registry

    registry = get_registry()
    if resume and out is not None and opts["config_path"] is None:
        opts["config_path"] = out / "config.toml"
    opts["overrides"] = [*(["train.compile=true"] if compile_ else []),
                         *(["train.amp=true"] if amp else []), *opts["overrides"]]
    config = resolve_run(registry, opts)
    if print_config:
        click.echo(dump_toml(config, registry), nl=False)
        return
    out = out or _default_out(config)
    record = train(config, out, resume=resume, registry=registry)
    click.echo(f"run {out}: {record['epochs']} epochs, {record['wall_time_s']:.1f} s, "
               f"{record['images_per_s']:.0f} img/s; {record['split']} results:")
    click.echo(results_table(record))


@main.command("eval")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "val", "test"]), help="Split to evaluate.")
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
@click.option("--seeds", "seeds", type=int, multiple=True,
              help="Seeds to train: --seeds 0 1 2 [default: 0].")
@click.argument("more_seeds", nargs=-1, type=int, metavar="")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs") / "baselines", show_default=True,
              help="Where the baseline runs are trained.")
def baselines_cmd(seeds: tuple[int, ...], more_seeds: tuple[int, ...], root: Path,
                  print_config: bool, **opts: Any) -> None:
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
