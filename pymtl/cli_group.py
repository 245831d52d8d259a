"""``pymtl group``: which tasks should be learned together (Standley et al., ICML 2020).

Registered on :data:`pymtl.cli.main`. Subcommands: ``select`` (choose networks per inference
budget, write Table 4, Figure 5 and grouping files) and ``affinity`` (Tables 1–2). Both read
candidate files (:mod:`pymtl.taskgroups.candidates`); several files, e.g. one per shard of a
job array, are merged first. Training the candidates is ``pymtl group train``, which
registers itself on :data:`group_cmd`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pymtl.cli import main

__all__ = ["group_cmd", "parse_budgets", "parse_requirement"]

_CANDIDATES = click.argument(
    "candidates", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)


@main.group("group")
def group_cmd() -> None:
    """Task grouping (Standley et al., ICML 2020): which tasks share an encoder.

    Train candidate networks (every task subset, plus half-size single-task networks), then
    `pymtl group select` picks the best set of networks for each inference budget and writes
    grouping files for `pymtl train --arch branched --grouping FILE`; `pymtl group affinity`
    prints how much each task gains from each partner.
    """


def parse_budgets(text: str) -> list[float]:
    """``"1,1.5,2"`` -> ``[1.0, 1.5, 2.0]`` (each > 0)."""
    budgets = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise click.BadParameter(
                f"{part.strip()!r} is not a number; expected budgets in SNT such as 1,1.5,2"
            ) from None
        if not value > 0 or value == float("inf"):
            raise click.BadParameter(f"budget {part.strip()!r} must be a finite number > 0")
        budgets.append(value)
    return budgets


def parse_requirement(text: str) -> tuple[str, float]:
    """``"depth<=0.17"`` -> ``("depth", 0.17)``."""
    task, sep, bound = text.partition("<=")
    try:
        if not sep or not task.strip():
            raise ValueError
        return task.strip(), float(bound)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected TASK<=LOSS, e.g. depth<=0.17 (the highest acceptable loss)"
        ) from None


@group_cmd.command("select")
@_CANDIDATES
@click.option(
    "--budget",
    "budget_text",
    default=None,
    metavar="B1,B2,…",
    help="Budgets in SNT, comma-separated [default: 1, 1.5, …, number of tasks].",
)
@click.option(
    "--split", default="val", show_default=True, help="Split whose losses drive the selection."
)
@click.option(
    "--score-split",
    default=None,
    help="Split the chosen networks are scored on [default: test, when present].",
)
@click.option(
    "--esa-split",
    default=None,
    help="Also select on this split (early-stopping losses, ESA), e.g. esa.",
)
@click.option(
    "--hoa",
    is_flag=True,
    help="Also select on HOA predictions from the pair networks' --split losses.",
)
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="TASK<=LOSS",
    help="Hard requirement on a task's --split loss (repeatable; not applied to the ESA "
    "selection, whose losses are on another scale).",
)
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory.",
)
def select_cmd(candidates: tuple[Path, ...], budget_text: str | None, **opts: Any) -> None:
    """Choose the networks to train for each inference budget (exact branch and bound).

    Writes to --out: table.txt and table.md (Table 4: total loss per budget and method, then
    each budget's networks and each task's network), total-loss-vs-budget.png (Figure 5), and
    grouping-b{budget}.toml per budget for the selection on --split (grouping-esa-b…,
    grouping-hoa-b… for the other methods), each task decoded by the chosen network with its
    lowest selection loss. Budgets that no solution fits, or where no solution meets the
    requirements, get no grouping file and a warning. Example:

    \b
        pymtl group select runs/group/shard-*.toml --esa-split esa --hoa \\
            --require depth<=0.17 --out runs/group/sel
    """
    from pymtl.taskgroups import merge_candidates, method_label, select

    cset = merge_candidates(candidates)
    budgets = parse_budgets(budget_text) if budget_text is not None else None
    score = opts["score_split"] or ("test" if "test" in cset.splits else None)
    req = dict(parse_requirement(r) for r in opts["requires"])
    runs = [(opts["split"], False)]
    runs += [(opts["esa_split"], False)] if opts["esa_split"] else []
    runs += [(opts["split"], True)] if opts["hoa"] else []
    labels = [method_label(split, hoa) for split, hoa in runs]
    if len(set(labels)) < len(labels):
        raise click.BadParameter(f"--esa-split {opts['esa_split']!r} repeats --split")
    results = {
        label: select(
            cset,
            budgets,
            split=split,
            score_split=score,
            hoa=hoa,
            max_loss=req if split == opts["split"] else None,  # on --split's scale
        )
        for label, (split, hoa) in zip(labels, runs, strict=True)
    }
    _write_selection(results, opts["out_dir"])


def _write_selection(results: Any, out: Path) -> None:
    from pymtl.taskgroups import format_details, format_summary, plot_selection, write_groupings

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, name in (("text", "table.txt"), ("markdown", "table.md")):
        text = format_summary(results, fmt) + "\n" + format_details(results, fmt)
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    written.append(plot_selection(results, out / "total-loss-vs-budget.png"))
    for i, (method, sels) in enumerate(results.items()):
        written += write_groupings(sels, out, prefix="grouping" if i == 0 else f"grouping-{method}")
    click.echo(format_summary(results, "text"))
    for sels in results.values():
        for s in sels:
            if s.status != "ok":
                click.echo(f"warning: {s.message}; no grouping file for it", err=True)
    click.echo(f"wrote {len(written)} files to {out}: {', '.join(p.name for p in written)}")


@group_cmd.command("affinity")
@_CANDIDATES
@click.option("--split", default="test", show_default=True, help="Losses to compare.")
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory.",
)
def affinity_cmd(candidates: tuple[Path, ...], split: str, out_dir: Path) -> None:
    """Tables 1–2: each task's gain when trained with each other task, from the pair networks
    and the half-size single-task networks.

    Writes affinity.txt, affinity.md and affinity.png (heat maps) to --out. Example:

    \b
        pymtl group affinity runs/group/shard-*.toml --split test --out runs/group/aff
    """
    from pymtl.taskgroups import affinity_tables, format_affinity, merge_candidates, plot_affinity

    tables = affinity_tables(merge_candidates(candidates), split)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt, name in (("text", "affinity.txt"), ("markdown", "affinity.md")):
        (out_dir / name).write_text(format_affinity(tables, fmt), encoding="utf-8")
    plot_affinity(tables, out_dir / "affinity.png")
    click.echo(format_affinity(tables, "text"))
    click.echo(f"wrote affinity.txt, affinity.md, affinity.png to {out_dir}")


# `pymtl group train` registers itself on group_cmd (imported last: it imports group_cmd)
from pymtl import cli_group_train  # noqa: E402, F401
