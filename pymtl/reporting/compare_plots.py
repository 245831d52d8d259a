"""PNG plots of a :class:`~pymtl.reporting.compare.Comparison`: Δ_MTL bars and a performance
profile.

Reference: SPEC-data §2.8 [pymtl] (Δ_MTL mean ± std over seeds, with its direction) and Dolan &
Moré (2002) performance profiles, as defined in :mod:`pymtl.reporting.profile` (which also says
how this relates to the survey's profile figure).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pymtl.reporting.compare import DELTA_VARIANTS, Comparison, profile_problems
from pymtl.reporting.plots import COLORS, new_figure, no_data, save_figure
from pymtl.reporting.profile import performance_profile, performance_ratios

__all__ = ["plot_comparison", "profile_taus"]

_LINES = ("-", "--", "-.", ":")


def plot_comparison(
    comparison: Comparison, out_dir: str | Path, *, variant: str = "per_task"
) -> list[Path]:
    """Write ``compare_delta.png`` and ``performance_profile.png`` into ``out_dir``.

    Args:
        comparison: from :func:`~pymtl.reporting.compare.compare_runs`.
        out_dir: folder to write to (created if needed).
        variant: the Δ_MTL variant of the bar chart: ``per_task``, ``per_metric`` or
            ``task_then_metric``.

    Returns:
        The two paths written.
    """
    if variant not in DELTA_VARIANTS:
        raise ValueError(
            f"plot_comparison: unknown Δ_MTL variant {variant!r} "
            f"(expected one of {', '.join(DELTA_VARIANTS)})"
        )
    out = Path(out_dir)
    return [
        _plot_delta(comparison, variant, path=out / "compare_delta.png"),
        _plot_profile(comparison, path=out / "performance_profile.png"),
    ]


def profile_taus(ratios: list[float] | np.ndarray, *, points: int = 200) -> np.ndarray:
    """A τ grid from 1 to a little past the largest finite ratio, holding every finite ratio
    exactly (so a step plot of the profile on it is exact)."""
    r = np.asarray(ratios, dtype=np.float64)
    finite = r[np.isfinite(r)]
    top = max(float(finite.max()) if finite.size else 1.0, 1.0)
    end = 1.0 + max(top - 1.0, 0.02) * 1.08
    return np.unique(np.concatenate([np.linspace(1.0, end, points), finite]))


def _label_width(comparison: Comparison) -> float:
    return max((len(m.label) for m in comparison.methods), default=4)


def _plot_delta(comparison: Comparison, variant: str, *, path: Path) -> Path:
    methods = comparison.methods
    rotate = len(methods) > 4 or _label_width(comparison) > 14
    fig = new_figure(max(6.0, 1.2 * len(methods) + 2.5), 5.0 if rotate else 4.5)
    ax = fig.add_subplot()
    arrow = "↑" if DELTA_VARIANTS[variant] else "↓"
    title = variant.replace("_", "-")
    ax.set_title(
        f"Δ_MTL {title} ({arrow} better) on {comparison.dataset}/{comparison.split}\n"
        "mean ± sample std over seeds (n = seeds with a baseline)"
    )
    stats = [m.delta.get(variant) for m in methods]
    if all(s is None for s in stats):
        no_data(ax, f"no Δ_MTL {title}: none of these runs had a baseline")
        return save_figure(fig, path)
    x = np.arange(len(methods))
    means = [s.mean if s is not None and math.isfinite(s.mean) else 0.0 for s in stats]
    errors = [s.std if s is not None and math.isfinite(s.std) else 0.0 for s in stats]
    colors = [COLORS[i % len(COLORS)] for i in range(len(methods))]
    ax.bar(x, means, yerr=errors, capsize=5, color=colors, edgecolor="black", lw=0.6)
    ax.axhline(0.0, color="black", lw=1.0)
    for i, stat in enumerate(stats):
        text = "no Δ" if stat is None else f"{stat.mean:+.2f} (n={stat.n})"
        up = means[i] >= 0
        ax.annotate(
            text,
            (x[i], means[i] + (errors[i] if up else -errors[i])),
            xytext=(0, 4 if up else -4),
            textcoords="offset points",
            ha="center",
            va="bottom" if up else "top",
            fontsize="small",
        )
    labels = [m.label for m in methods]
    ax.set_xticks(x, labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(f"Δ_MTL {title} (%)")
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


def _plot_profile(comparison: Comparison, *, path: Path) -> Path:
    outside = len(comparison.methods) > 4  # a long legend goes to the right of the axes
    fig = new_figure(7.0 + (0.07 * _label_width(comparison) + 1.0 if outside else 0.0), 4.8)
    ax = fig.add_subplot()
    values, higher, problems = profile_problems(comparison)
    ax.set_title(
        f"Performance profile on {comparison.dataset}/{comparison.split}: "
        f"{len(problems)} problems (task × paired seed, primary metric)",
        fontsize="medium",
    )
    if not problems:
        no_data(ax, "no seed was run by every method, so there are no shared problems")
        return save_figure(fig, path)
    ratios = performance_ratios(values, higher)
    taus = profile_taus(np.concatenate(list(ratios.values())))
    rho = performance_profile(values, higher, taus)
    for i, (label, curve) in enumerate(rho.items()):
        ax.step(
            taus,
            curve,
            where="post",
            lw=2.0,
            color=COLORS[i % len(COLORS)],
            ls=_LINES[i % len(_LINES)],
            label=label,
        )
    ax.set_xlim(1.0, float(taus[-1]))
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel("τ (performance ratio: best/own if higher is better, own/best if lower)")
    ax.set_ylabel("fraction of problems with ratio ≤ τ")
    ax.grid(True, alpha=0.3)
    if outside:
        ax.legend(title="method", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(title="method", fontsize="small", loc="best")
    return save_figure(fig, path)
