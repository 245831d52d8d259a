"""``pymtl sweep``: a grid of architectures × balancers × seeds, resumable [pymtl].

Each grid point trains into ``ROOT/<arch>_<balancer>_seed<N>``: a finished point (with its
``metrics.json``) is skipped, an interrupted one resumes from its checkpoint, so re-running the
same command after an interruption finishes the grid. The grid comes from flags or from a
``[sweep]`` table (``archs``, ``balancers``, ``seeds``) in the run's TOML file; everything else
in that file is the base configuration of every point.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pymtl.config import resolve_config
from pymtl.engine.loop import train
from pymtl.errors import ConfigError
from pymtl.plugins import Registry

__all__ = ["Grid", "grid_from_document", "run_sweep"]


@attrs.frozen(kw_only=True)
class Grid:
    """The points of a sweep."""

    archs: tuple[str, ...]
    balancers: tuple[str, ...]
    seeds: tuple[int, ...]

    def points(self) -> list[tuple[str, str, int]]:
        return [(a, b, s) for a in self.archs for b in self.balancers for s in self.seeds]


def grid_from_document(
    doc: Mapping[str, Any],
    *,
    archs: Sequence[str] = (),
    balancers: Sequence[str] = (),
    seeds: Sequence[int] = (),
) -> Grid:
    """Flags win over the ``[sweep]`` table; the base document fills what both leave out."""
    table = doc.get("sweep", {})
    unknown = sorted(set(table) - {"archs", "balancers", "seeds"})
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} @ $.sweep (expected: archs, balancers, seeds)"
        )
    base_arch = doc.get("arch", {}).get("name")
    base_balancer = doc.get("balancer", {}).get("name", "ew")
    grid = Grid(
        archs=tuple(archs or table.get("archs", [base_arch] if base_arch else [])),
        balancers=tuple(balancers or table.get("balancers", [base_balancer])),
        seeds=tuple(int(s) for s in (seeds or table.get("seeds", [doc.get("seed", 0)]))),
    )
    if not grid.archs:
        raise ConfigError("sweep: no architecture given (--archs, [sweep] archs or [arch] name)")
    return grid


def _point_document(doc: Mapping[str, Any], arch: str, balancer: str, seed: int) -> dict[str, Any]:
    point = {k: v for k, v in doc.items() if k != "sweep"}
    arch_section = dict(point.get("arch", {}))
    point["arch"] = {**arch_section, "name": arch}
    bal = dict(point.get("balancer", {}))
    # the base balancer's options only apply to that balancer
    point["balancer"] = (
        bal | {"name": balancer} if bal.get("name") == balancer else {"name": balancer}
    )
    point["seed"] = seed
    return point


def run_sweep(
    doc: Mapping[str, Any],
    grid: Grid,
    registry: Registry,
    root: Path,
    *,
    overrides: Sequence[str] = (),
) -> list[Path]:
    """Train every grid point not finished yet; returns the run directories in grid order."""
    configs = [
        (p, resolve_config(_point_document(doc, *p), registry, overrides=overrides))
        for p in grid.points()
    ]  # resolve all first: a typo fails before any training
    runs = []
    for (arch, balancer, seed), config in configs:
        out = root / f"{arch}_{balancer}_seed{seed}"
        runs.append(out)
        if (out / "metrics.json").is_file():
            print(f"sweep: {out.name} finished earlier, skipped", file=sys.stderr)
            continue
        resume = (out / "checkpoints" / "last.pt").is_file()
        print(f"sweep: {'resuming' if resume else 'training'} {out.name}", file=sys.stderr)
        train(config, out, resume=resume, registry=registry)
    return runs
