"""Tables, plot and grouping files of a selection over budgets [S][pymtl].

Reference: Standley et al. (ICML 2020) Table 4 (total test loss of each method's chosen
networks per budget) and Figure 5 (the same against the budget) [S]; grouping files in the
format of :mod:`pymtl.architectures.grouping` [pymtl]. ``results`` everywhere is a mapping
method label -> the :class:`~pymtl.taskgroups.results.Selection` list of that method, one per
budget, in the same budget order for every method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pymtl.architectures.grouping import write_grouping
from pymtl.taskgroups.results import Selection

__all__ = ["format_details", "format_summary", "plot_selection", "write_groupings"]

Results = Mapping[str, Sequence[Selection]]


def _value(sel: Selection, digits: int) -> str:
    if sel.status != "ok":
        return sel.status
    return f"{_total_of(sel):.{digits}f}"


def _render(rows: Sequence[Sequence[str]], fmt: str) -> str:
    if fmt == "markdown":
        head, *body = rows
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _split(sel: Selection) -> str:
    return f"{sel.split} (HOA)" if sel.hoa else sel.split


def _what(sel: Selection) -> str:
    scored = sel.score_split if sel.score_total is not None else None
    return f"{sel.method}: selected on {_split(sel)}" + (f", scored on {scored}" if scored else "")


def format_summary(results: Results, fmt: str = "text", *, digits: int = 3) -> str:
    """Table 4: one row per budget, one column per method, each cell the total loss of the
    chosen networks on the scoring split (the selection split when unscored), or the status
    (see :data:`~pymtl.taskgroups.results.STATUSES`) when not ``ok``."""
    methods = list(results)
    first = results[methods[0]]
    rows = [["budget (SNT)", *methods]]
    for i, sel in enumerate(first):
        rows.append([f"{sel.budget:g}", *(_value(results[m][i], digits) for m in methods)])
    notes = "; ".join(_what(results[m][0]) for m in methods)
    title = f"Total loss of the chosen networks per budget ({notes})"
    return f"{title}\n\n{_render(rows, fmt)}\n"


def _cell(x: float | None, digits: int = 5) -> str:
    return "—" if x is None or math.isinf(x) else f"{x:.{digits}f}"


def _method_rows(sels: Sequence[Selection], tasks: Sequence[str]) -> list[list[str]]:
    split = _split(sels[0])
    score = next((s.score_split for s in sels if s.score_split), None)
    head = ["budget", "status", "cost", "networks", f"{split} total"]
    head += [f"{score} total", f"deployed {score}"] if score else []
    head += [f"{t}: network ({split})" for t in tasks]
    rows = [head]
    for s in sels:
        row = [f"{s.budget:g}", s.status, f"{s.cost:g}", " ".join(n.name for n in s.networks)]
        row.append(_cell(s.total))
        row += [_cell(s.score_total), _cell(s.deployed_total)] if score else []
        for t in tasks:
            k = s.assignment.get(t)
            row.append("—" if k is None else f"{s.networks[k].name} ({s.task_loss[t]:.5f})")
        rows.append(row)
    return rows


def format_details(results: Results, fmt: str = "text") -> str:
    """Per method and budget: status, cost, chosen networks, totals, and each task's network
    (Standley's min rule on the selection split) with its loss; then any status message."""
    out = []
    for method, sels in results.items():
        tasks = list(sels[0].task_loss) if sels else []
        title = f"## {method}" if fmt == "markdown" else f"{method}\n{'=' * len(method)}"
        out.append(f"{title}\n\n{_render(_method_rows(sels, tasks), fmt)}\n")
        problems = [s.message for s in sels if s.status != "ok"]
        out += [f"* {m}" for m in problems] + ([""] if problems else [])
    return "\n".join(out)


def plot_selection(results: Results, path: str | Path) -> Path:
    """Figure 5: total loss of each method's chosen networks against the budget (PNG)."""
    from pymtl.reporting.plots import COLORS, new_figure, save_figure

    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    ylabel = "total loss"
    for i, (method, sels) in enumerate(results.items()):
        xs = [s.budget for s in sels]
        ys = [_total_of(s) if s.status == "ok" else math.nan for s in sels]
        ax.plot(xs, ys, marker="o", ms=4, color=COLORS[i % len(COLORS)], label=method)
        if sels:
            ylabel = f"total {_scored_split(sels)} loss"
    ax.set_xlabel("inference budget (SNT)")
    ax.set_ylabel(ylabel)
    ax.set_title("Chosen networks: total loss against the budget")
    ax.grid(True, alpha=0.3)
    ax.legend(title="method", fontsize="small")
    return save_figure(fig, Path(path))


def _total_of(sel: Selection) -> float:
    return sel.score_total if sel.score_total is not None else sel.total


def _scored_split(sels: Sequence[Selection]) -> str:
    scored = [s.score_split for s in sels if s.score_total is not None and s.score_split]
    return scored[0] if scored else sels[0].split


def write_groupings(
    sels: Sequence[Selection], out_dir: str | Path, *, prefix: str = "grouping"
) -> list[Path]:
    """One grouping file ``{prefix}-b{budget}.toml`` per budget whose status is ``ok``
    (:meth:`~pymtl.taskgroups.results.Selection.to_grouping`); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in sels:
        if s.status != "ok":
            continue
        path = out / f"{prefix}-b{s.budget:g}.toml"
        lines = [
            f"pymtl group select: method {s.method}, budget {s.budget:g} SNT, cost {s.cost:g}",
            f"networks: {', '.join(n.name for n in s.networks)}",
            f"{s.split} total {s.total:.5f}"
            + (f", {s.score_split} total {s.score_total:.5f}" if s.score_total is not None else ""),
            f"choose: each task's network with the lowest {s.split} loss (Standley's min rule)",
        ]
        write_grouping(s.to_grouping(), path, comment="\n".join(lines))
        paths.append(path)
    return paths
