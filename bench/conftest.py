"""Benchmark setup (``pytest bench ...``; ``testpaths`` keeps ``bench/`` out of a plain run).

* ``bench_*.py`` files are collected here (pytest's default pattern is ``test_*.py``).
* torch's intra-op threads are pinned to the cores this process may run on, for the whole
  session. Our kernels share torch's libgomp, so this also sets their OpenMP thread count.
* The saved JSON (``--benchmark-json`` / ``--benchmark-autosave``) gets
  ``ratio_min_to_pymtl``: per group, each implementation's min time over ``pymtl``'s, and the
  torch version, thread count and compiled-ops status in ``machine_info``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

import pymtl._ext


def bench_threads() -> int:
    """The cores this process may use (its CPU affinity), which is what torch is pinned to."""
    return len(os.sched_getaffinity(0))


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        if parent.session.isinitpath(file_path):
            return None  # named on the command line: pytest collects it already
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(autouse=True, scope="session")
def _pin_threads() -> None:
    torch.set_num_threads(bench_threads())


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = bench_threads()
    machine_info["pymtl_ops"] = pymtl._ext.status()
    if torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    mins: dict[str, dict[str, float]] = {}
    for bench in output_json["benchmarks"]:
        impl = bench.get("extra_info", {}).get("impl")
        if impl is not None and bench.get("stats"):
            mins.setdefault(bench["group"], {})[impl] = bench["stats"]["min"]
    output_json["ratio_min_to_pymtl"] = {
        group: {impl: t / times["pymtl"] for impl, t in sorted(times.items())}
        for group, times in sorted(mins.items())
        if times.get("pymtl")
    }
