"""Task affinity: first-order relative performance (Table 1) and its symmetric mean (Table 2)
[S][C].

Reference: SPEC-methods §4.4 (Standley et al., ICML 2020, Tables 1–2 [S]). For tasks a ≠ b,
``Rel(a | b) = (L_half(a) − L_ab(a)) / L_half(a) × 100 %``: the gain on task a (column) when
it is trained together with b (row), relative to a alone on a half-size network (the same
total SNT as one full-size pair network); ``Aff(a, b) = (Rel(a|b) + Rel(b|a)) / 2``. The paper
uses the test losses. Averages are plain means over the off-diagonal entries [S].

pymtl [pymtl]: the pair networks are those of width ``pair_width`` (1.0) and the single-task
ones of half that width.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
from numpy.typing import NDArray

from pymtl.taskgroups.candidates import CandidateFormatError, CandidateSet

__all__ = ["AffinityTables", "affinity_tables", "format_affinity", "plot_affinity"]


@attrs.frozen(kw_only=True)
class AffinityTables:
    """Tables 1 and 2 of one candidate set.

    Attributes:
        tasks: the k tasks, the order of both axes.
        relative: [k, k] Table 1 in %: ``relative[b, a] = Rel(a | b)`` (row "trained with",
            column "performance on"), NaN on the diagonal.
        affinity: [k, k] Table 2 in %, symmetric, NaN on the diagonal.
        split: the split whose losses were used.
    """

    tasks: tuple[str, ...]
    relative: NDArray[np.float64]
    affinity: NDArray[np.float64]
    split: str


def _loss(cset: CandidateSet, tasks: tuple[str, ...], width: float, split: str, task: str) -> float:
    c = cset.find(tasks, width)
    if c is None:
        kind = "half-size single-task" if len(tasks) == 1 else "pair"
        raise CandidateFormatError(
            f"{cset.source}: affinity needs the {kind} network of tasks {list(tasks)} at width "
            f"{width:g}; it is not among the candidates"
        )
    return c.loss(split, task)


def affinity_tables(
    cset: CandidateSet, split: str = "test", *, pair_width: float = 1.0
) -> AffinityTables:
    """Tables 1 and 2 from the pair networks and half-size single-task networks of ``cset``.

    Raises:
        CandidateFormatError: ``split`` or one of the needed networks is missing.
    """
    cset.check_split(split)
    k = len(cset.tasks)
    rel = np.full((k, k), np.nan)
    for a_i, a in enumerate(cset.tasks):
        half = _loss(cset, (a,), pair_width / 2, split, a)
        for b_i, b in enumerate(cset.tasks):
            if a != b:
                pair = _loss(cset, (a, b), pair_width, split, a)
                rel[b_i, a_i] = (half - pair) / half * 100.0
    return AffinityTables(tasks=cset.tasks, relative=rel, affinity=(rel + rel.T) / 2, split=split)


def _row_mean(row: NDArray[np.float64]) -> float:
    return float(np.nanmean(row)) if np.any(np.isfinite(row)) else float("nan")


def _grid(tables: AffinityTables, which: str, digits: int) -> list[list[str]]:
    m = tables.relative if which == "relative" else tables.affinity
    corner = "trained with \\ on" if which == "relative" else "task"
    rows = [[corner, *tables.tasks, "Average"]]
    for i, t in enumerate(tables.tasks):
        cells = ["–" if i == j else f"{m[i, j]:.{digits}f}" for j in range(len(tables.tasks))]
        rows.append([t, *cells, f"{_row_mean(m[i]):.{digits}f}"])
    if which == "relative":
        cols = [f"{_row_mean(m[:, j]):.{digits}f}" for j in range(len(tables.tasks))]
        rows.append(["Average", *cols, ""])
    return rows


def _render(rows: list[list[str]], fmt: str) -> str:
    if fmt == "markdown":
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def format_affinity(tables: AffinityTables, fmt: str = "text", *, digits: int = 2) -> str:
    """Both tables as aligned text or markdown, in %, with their averages."""
    t1 = f"Table 1: relative performance on {tables.split} (%), rows trained with, columns on"
    t2 = "Table 2: task affinity (%), (Rel(a|b) + Rel(b|a)) / 2"
    one = _render(_grid(tables, "relative", digits), fmt)
    two = _render(_grid(tables, "affinity", digits), fmt)
    return f"{t1}\n\n{one}\n\n{t2}\n\n{two}\n"


def plot_affinity(tables: AffinityTables, path: str | Path) -> Path:
    """Both tables as heat maps side by side (diverging colours centred on 0), PNG."""
    from pymtl.reporting.plots import new_figure, save_figure

    k = len(tables.tasks)
    fig = new_figure(2.0 + 1.3 * k, 1.0 + 0.6 * k)
    axes = fig.subplots(1, 2)
    finite = np.abs(tables.relative[np.isfinite(tables.relative)])
    scale = float(finite.max()) if finite.size else 1.0
    titles = (f"relative performance on {tables.split} (%)", "affinity (%)")
    for ax, m, title in zip(axes, (tables.relative, tables.affinity), titles, strict=True):
        image = ax.imshow(m, cmap="RdBu", vmin=-scale, vmax=scale)
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                color = "white" if abs(v) > 0.6 * scale else "black"
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize="small", color=color)
        ax.set_xticks(range(k), tables.tasks)
        ax.set_yticks(range(k), tables.tasks)
        ax.set_title(title, fontsize="medium")
        fig.colorbar(image, ax=ax, shrink=0.8)
    axes[0].set_xlabel("performance on")
    axes[0].set_ylabel("trained with")
    return save_figure(fig, Path(path))
