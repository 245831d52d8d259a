"""``pymtl group train``: train the candidate networks of a task-grouping search.

Registered on :data:`pymtl.cli_group.group_cmd`; the work is done by
:func:`pymtl.taskgroups.training.train_candidates` (SPEC-methods §4.1, §4.3 [S]; run layout,
splits and costs [pymtl] are described there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pymtl.cli import resolve_run, run_options
from pymtl.cli_group import group_cmd
from pymtl.errors import ConfigError

__all__ = ["group_train_cmd", "parse_task_list"]


def parse_task_list(text: str) -> tuple[str, ...]:
    """``"semseg, depth"`` -> ``("semseg", "depth")``: distinct non-empty names."""
    tasks = tuple(t.strip() for t in text.split(","))
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if not all(tasks) or twice:
        why = f"{twice} repeated" if twice else "an empty name"
        raise ConfigError(
            f"--tasks {text!r}: {why}; expected distinct task names separated by commas, "
            "e.g. semseg,depth,normals"
        )
    return tasks


def _refuse_flags(opts: dict[str, Any]) -> None:
    if opts.get("grouping") is not None:
        raise ConfigError(
            "--grouping is for `pymtl train --arch branched`; pymtl group train trains one "
            "hps network per candidate and takes no grouping file"
        )
    if opts.get("arch") is None:  # hps unless --config names an architecture
        from pymtl.config import load_document

        path = opts.get("config_path")
        doc = load_document(path) if path is not None else {}
        if not doc.get("arch", {}).get("name"):
            opts["overrides"] = ['arch.name="hps"', *opts["overrides"]]


@group_cmd.command("train")
@run_options
@click.option(
    "--tasks",
    "tasks_text",
    default=None,
    metavar="A,B,C",
    help="The problem's tasks [default: every task of the dataset].",
)
@click.option(
    "--mode",
    type=click.Choice(["full", "hoa", "esa"]),
    default="full",
    show_default=True,
    help="full: every task subset; hoa: singles and pairs; esa: the full list, trained briefly.",
)
@click.option(
    "--esa-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.2,
    show_default=True,
    help="With --mode esa: the part of one epoch each network trains for.",
)
@click.option(
    "--reduced-width",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="Width factor of the reduced single-task networks.",
)
@click.option(
    "--cost",
    type=click.Choice(["width", "macs"]),
    default="width",
    show_default=True,
    help="Cost in SNT: the width factor, or multiply-adds over the single-task networks'.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs") / "group",
    show_default=True,
    help="Folder of the candidates' run directories.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Candidates trained at once, in parallel processes.",
)
@click.option(
    "--shard", default=None, metavar="I/N", help="Train only shard I of N, e.g. 2/4 (1-based)."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Candidate file [default: ROOT/candidates[-MODE][-shardIofN].toml; no MODE for full].",
)
def group_train_cmd(print_config: bool, **opts: Any) -> None:
    """Train the candidate networks of a task-grouping search and write their losses.

    Each candidate is an hps network with equal weights on a subset of --tasks: --mode full
    trains every subset at full width plus one reduced-width network per task (2^k - 1 + k
    runs), hoa the singles and pairs plus the reduced ones, esa the full list for
    --esa-fraction of one epoch. Runs go to ROOT/<task+task>@<width>/ (ROOT/esa-<fraction>/
    for esa); re-running the command skips finished candidates and resumes interrupted ones.
    The candidate file holds each network's per-task loss on val and test (esa: splits esa and
    esa-test) for `pymtl group select` and `pymtl group affinity`; shards' files are merged
    there. The other options build the base run, as in `pymtl train`. Example:

    \b
        pymtl group train --dataset synthetic --preset standard \\
            --tasks semseg,depth,normals,edges --jobs 2 --root runs/group
        pymtl group select runs/group/candidates.toml --out runs/group/select
    """
    from pymtl.config import dump_toml
    from pymtl.plugins import get_registry
    from pymtl.taskgroups.training import GroupTrainPlan, parse_shard, train_candidates

    tasks_text, shard_text = opts.pop("tasks_text"), opts.pop("shard")
    names = ("mode", "esa_fraction", "reduced_width", "cost", "root", "jobs", "out")
    own = {k: opts.pop(k) for k in names}
    tasks = parse_task_list(tasks_text) if tasks_text is not None else ()
    shard = parse_shard(shard_text) if shard_text is not None else None
    _refuse_flags(opts)
    registry = get_registry()
    config = resolve_run(registry, opts)
    if print_config:
        click.echo(dump_toml(config, registry), nl=False)
        return
    plan = GroupTrainPlan(tasks=tasks, shard=shard, **own)
    cset = train_candidates(config, plan, registry=registry)
    click.echo(
        f"wrote {len(cset.candidates)} candidates ({plan.mode}, tasks {', '.join(cset.tasks)}, "
        f"splits {json.dumps(list(cset.splits))}) to {plan.out_path}"
    )
