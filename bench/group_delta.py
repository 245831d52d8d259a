"""Δ_MTL of the task-grouping pipeline's solutions, against its own single-task networks.

Reads the candidate file of ``bench/group_pipeline.sh`` (each candidate's run directory is in
its ``info.run``), selects on the validation losses for each budget (the exact search, as
``pymtl group select``), and scores every solution on the test split by task *metrics*: each
task is served by the chosen network with its lowest validation loss (Standley's min rule),
and its test metrics are that network's (``pymtl eval RUN --split test``, cached in the run as
``eval-test.json``). Δ_MTL (survey Eq. 10, primary metric per task, higher is better) is taken
against the full-width single-task networks of the same pipeline (same data, same budget).

Compared at equal inference cost, where the candidate set holds the network that defines them:

* ``grouped``: the selected solution, at every budget;
* ``one all-task network``: the full-width network of all tasks (cost 1 SNT);
* ``independent networks``: one single-task network per task at width b/k (k half-width
  networks at b = k/2, k full-width ones at b = k).

    python bench/group_delta.py bench/results/grouping/candidates.toml \\
        > bench/results/grouping/delta.md
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pymtl.config import load_config
from pymtl.engine import build
from pymtl.engine.runs import evaluate_run
from pymtl.evaluation import delta_per_task
from pymtl.plugins import get_registry
from pymtl.taskgroups.candidates import Candidate, read_candidates
from pymtl.taskgroups.results import select

Metrics = dict[str, dict[str, float]]


def _test_metrics(candidate: Candidate, registry: Any) -> Metrics:
    run = Path(str(candidate.info["run"]))
    cached = run / "eval-test.json"
    if cached.is_file():
        import json

        return dict(json.loads(cached.read_text())["metrics"])
    return dict(evaluate_run(run, registry, split="test")["metrics"])


def _solution_metrics(
    networks: Sequence[Candidate], assignment: Mapping[str, int], registry: Any
) -> Metrics:
    return {task: _test_metrics(networks[i], registry)[task] for task, i in assignment.items()}


def _singles(cands: Any, width: float, registry: Any) -> Metrics | None:
    nets = [cands.find([t], width) for t in cands.tasks]
    if any(n is None for n in nets):
        return None
    return {t: _test_metrics(n, registry)[t] for t, n in zip(cands.tasks, nets, strict=True)}


def _declarations(cands: Any, registry: Any) -> dict[str, Any]:
    """Each task's declaration, read from the runs (a candidate's dataset holds its tasks)."""
    tasks: dict[str, Any] = {}
    for cand in cands.candidates:
        if len(tasks) == len(cands.tasks):
            break
        config = load_config(Path(str(cand.info["run"])) / "config.toml", registry)
        tasks.update({t.name: t for t in build.build_dataset(config, registry, "test").tasks})
    return tasks


HEAD = (
    "| budget (SNT) | grouped: networks | grouped Δ_MTL % | one all-task network Δ_MTL % "
    "| independent networks Δ_MTL % |\n|---|---|---|---|---|"
)


def main(path: str) -> None:
    registry = get_registry()
    cands = read_candidates(path)
    tasks = _declarations(cands, registry)
    directions = {n: t.metric().higher_is_better for n, t in tasks.items()}
    primary = {n: t.primary for n, t in tasks.items()}
    base = _singles(cands, 1.0, registry)
    if base is None:
        raise SystemExit(f"{path}: no full-width single-task network for every task")

    def delta(metrics: Metrics | None) -> str:
        if metrics is None:
            return ""
        return f"{delta_per_task(metrics, base, directions, primary=primary):+.2f}"

    k = len(cands.tasks)
    everything = cands.find(cands.tasks, 1.0)
    print(HEAD)
    for sel in select(cands, [1 + 0.5 * i for i in range(2 * k - 1)], split="val"):
        if sel.status != "ok":
            print(f"| {sel.budget:g} | {sel.status} | | | |")
            continue
        grouped = _solution_metrics(sel.networks, sel.assignment, registry)
        alone = None
        if sel.budget == 1 and everything is not None:
            alone = {t: _test_metrics(everything, registry)[t] for t in cands.tasks}
        independent = _singles(cands, sel.budget / k, registry)
        names = ", ".join(n.name for n in sel.networks)
        print(
            f"| {sel.budget:g} | {names} | {delta(grouped)} | {delta(alone)} "
            f"| {delta(independent)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
