"""PNG plots of one run: per-task training losses, balancer weights and evaluation metrics.

Reference: the run-directory format of the pymtl training engine [pymtl]; the plots are drawn
from ``metrics.jsonl`` (one record per evaluation) and, for the primary metric and the metric
directions, ``metrics.json``. Figures are built with :class:`matplotlib.figure.Figure` and the
Agg canvas, so no pyplot state or display is involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import MaxNLocator

from pymtl.reporting.runs import Run, load_run

__all__ = ["COLORS", "new_figure", "no_data", "plot_run", "save_figure"]

COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
"""Colour cycle (matplotlib's tab10) shared by every pymtl plot."""

LOG_DECADES = 2.0
"""Loss plots switch to a log y-axis when max/min of the plotted losses exceeds 10**this."""

_STYLES = ("-", "--", ":", "-.")


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout, drawn by the Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_run(run: str | Path | Run, *, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``loss.png``, ``weights.png`` and ``metrics.png`` of a run.

    Args:
        run: a run directory, or a :class:`Run` already loaded.
        out_dir: where to write them; None: ``RUN/plots``.

    Returns:
        The paths written, in that order.
    """
    run = run if isinstance(run, Run) else load_run(run)
    if not run.history:
        raise ValueError(
            f"{run.path / 'metrics.jsonl'} has no records, so there is nothing to plot "
            "(expected one line per evaluation)"
        )
    out = Path(out_dir) if out_dir is not None else run.path / "plots"
    train = _train_series(run.history)
    tasks = _tasks(run)
    colors = {task: COLORS[i % len(COLORS)] for i, task in enumerate(tasks)}
    return [
        _plot_per_task(run, train, key="loss", colors=colors, path=out / "loss.png"),
        _plot_per_task(run, train, key="weights", colors=colors, path=out / "weights.png"),
        _plot_metrics(run, tasks, path=out / "metrics.png"),
    ]


def _tasks(run: Run) -> list[str]:
    """Task names in first-seen order over summary, losses and metrics."""
    names: dict[str, None] = {}
    if run.summary is not None:
        names.update(dict.fromkeys(run.summary["tasks"]))
    for record in run.history:
        names.update(dict.fromkeys(record["train"]["loss"]))
        names.update(dict.fromkeys(record["metrics"]))
    return list(names)


def _train_series(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"epoch": [...], "loss": {task: [...]}, "weights": …, "distill": …}`` with one point per
    epoch (its first record: evaluations of other splits repeat the same training means)."""
    first: dict[int, Mapping[str, Any]] = {}
    for record in history:
        first.setdefault(record["epoch"], record)
    epochs = sorted(first)
    out: dict[str, Any] = {"epoch": epochs}
    for key in ("loss", "weights", "distill"):
        tasks = {t: None for e in epochs for t in first[e]["train"].get(key, {})}
        out[key] = {
            t: [first[e]["train"].get(key, {}).get(t, math.nan) for e in epochs] for t in tasks
        }
    return out


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _epoch_axis(ax: Axes, epochs: Sequence[int]) -> None:
    """Integer epoch ticks (each epoch when there are few), a grid, and room around a single
    epoch."""
    ax.set_xlabel("epoch")
    distinct = sorted(set(epochs))
    if 0 < len(distinct) <= 12:
        ax.set_xticks(distinct)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(distinct) == 1:
        ax.set_xlim(distinct[0] - 1, distinct[0] + 1)
    ax.grid(True, alpha=0.3)


def no_data(ax: Axes, text: str) -> None:
    """Replace an empty plot's content with a centred grey message."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _line(ax: Axes, xy: tuple[Sequence[int], Sequence[float]], **style: Any) -> None:
    """One series with point markers; a lone point is labelled with its value."""
    x, y = xy
    ax.plot(x, y, marker="o", ms=4, **style)
    if len(x) == 1 and math.isfinite(y[0]):
        ax.annotate(
            f"{y[0]:.4g}",
            (x[0], y[0]),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize="x-small",
            color=style.get("color"),
        )


def _plot_per_task(
    run: Run, train: Mapping[str, Any], *, key: str, colors: Mapping[str, str], path: Path
) -> Path:
    """``train.loss`` or ``train.weights`` of every task against the epoch."""
    fig = new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    balancer = run.config.get("balancer", {}).get("name", "?")
    what = "training loss per task" if key == "loss" else f"task weights w of balancer {balancer!r}"
    ax.set_title(f"{run.name}: {what} (epoch mean)")
    values = [v for series in train[key].values() for v in _finite(series)]
    if not values:
        no_data(ax, f"no finite {what} recorded")
        return save_figure(fig, path)
    for task, series in train[key].items():
        _line(ax, (train["epoch"], series), color=colors[task], label=task)
    if key == "loss" and train["distill"]:  # distillation terms λ_t D_t, dashed, task colours
        ax.set_title(f"{run.name}: task losses (solid) and distillation terms (dashed)")
        for task, series in train["distill"].items():
            _line(ax, (train["epoch"], series), color=colors[task], ls="--", label=f"{task} D")
        values += [v for series in train["distill"].values() for v in _finite(series)]
    ylabel = "loss" if key == "loss" else "weight w"
    if key == "loss" and _log_scale(values):
        ax.set_yscale("log")
        ylabel += " (log scale)"
    ax.set_ylabel(ylabel)
    _epoch_axis(ax, train["epoch"])
    ax.legend(title="task", fontsize="small", loc="best")
    return save_figure(fig, path)


def _log_scale(values: Sequence[float]) -> bool:
    """Whether positive values span more than ``LOG_DECADES`` decades."""
    low, high = min(values), max(values)
    return low > 0 and high / low > 10**LOG_DECADES


def _plot_metrics(run: Run, tasks: Sequence[str], *, path: Path) -> Path:
    ncols = min(3, len(tasks)) or 1
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig = new_figure(5.2 * ncols, 4.4 * nrows)
    fig.set_layout_engine(ConstrainedLayoutEngine(h_pad=0.12))
    splits = list(dict.fromkeys(str(r.get("split", "?")) for r in run.history))
    fig.suptitle(f"{run.name}: evaluation metrics on {', '.join(splits)}", fontweight="bold")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, task in zip(axes, tasks, strict=False):
        _task_panel(ax, run, task=task, splits=splits)
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    return save_figure(fig, path)


def _task_panel(ax: Axes, run: Run, *, task: str, splits: Sequence[str]) -> None:
    """One task's metrics: the primary one bold; with more than one epoch, metrics of another
    scale (over 10× apart from the primary) go on a right-hand axis."""
    info = run.summary["tasks"].get(task, {}) if run.summary is not None else {}
    primary, directions = info.get("primary"), info.get("higher_is_better", {})
    names = list(dict.fromkeys(m for r in run.history for m in r["metrics"].get(task, {})))
    names.sort(key=lambda m: m != primary)  # the primary first, the others in record order
    title = (
        task if primary is None else f"{task}: primary {primary}{_arrow(directions.get(primary))}"
    )
    ax.set_title(title + ("" if run.summary is not None else " (no metrics.json: no directions)"))
    if not names:
        no_data(ax, f"no metrics recorded for {task!r}")
        return
    series = {
        (m, s): _metric_series(run, task=task, metric=m, split=s) for m in names for s in splits
    }
    right = _other_scale(names, series=series, splits=splits)
    twin = ax.twinx() if right else None
    for i, metric in enumerate(names):
        for j, split in enumerate(splits):
            label = f"{metric}{_arrow(directions.get(metric))}"
            label += " (primary)" if metric == primary else ""
            label += f" [{split}]" if len(splits) > 1 else ""
            label += " (right axis)" if metric in right else ""
            _line(
                twin if twin is not None and metric in right else ax,
                series[metric, split],
                color=COLORS[i % len(COLORS)],
                ls=_STYLES[j % len(_STYLES)],
                label=label,
                lw=2.6 if metric == primary else 1.3,
                zorder=3 if metric == primary else 2,
            )
    _epoch_axis(ax, [e for key in series for e in series[key][0]])
    _panel_legend(ax, twin)


def _panel_legend(ax: Axes, twin: Axes | None) -> None:
    """Axis labels, and one legend below the panel for both y-axes."""
    ax.set_ylabel("metric value")
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        twin.set_ylabel("metric value (right axis)")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(
        handles,
        labels,
        fontsize="x-small",
        loc="upper center",
        frameon=False,
        bbox_to_anchor=(0.5, -0.16),
        ncol=min(3, len(labels)),
    )


def _other_scale(
    names: Sequence[str],
    *,
    series: Mapping[tuple[str, str], tuple[list[int], list[float]]],
    splits: Sequence[str],
) -> list[str]:
    """Metrics whose largest |value| is over 10× away from the primary's (first name's); none
    when every series has at most one point (lone points are labelled instead)."""
    if all(len(epochs) <= 1 for epochs, _ in series.values()):
        return []
    scale = {
        m: max((abs(v) for s in splits for v in _finite(series[m, s][1])), default=0.0)
        for m in names
    }
    ref = scale[names[0]]
    return [m for m in names[1:] if ref > 0 and scale[m] > 0 and not 0.1 <= scale[m] / ref <= 10]


def _metric_series(
    run: Run, *, task: str, metric: str, split: str
) -> tuple[list[int], list[float]]:
    points = [
        (r["epoch"], r["metrics"].get(task, {}).get(metric, math.nan))
        for r in run.history
        if str(r.get("split", "?")) == split
    ]
    return [e for e, _ in points], [v for _, v in points]


def _arrow(higher_is_better: bool | None) -> str:
    return "" if higher_is_better is None else (" ↑" if higher_is_better else " ↓")
