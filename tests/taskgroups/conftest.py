"""Shared data for the task-grouping tests: the Standley et al. setting-1 fixture (SPEC-methods
Appendix A, typed into the candidate format) and random small selection instances."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pymtl.taskgroups import CandidateSet, read_candidates

FIXTURE = Path(__file__).parent / "fixtures" / "standley_setting1.toml"


@pytest.fixture(scope="session")
def standley() -> CandidateSet:
    return read_candidates(FIXTURE)


@pytest.fixture(scope="session")
def make_instance() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """:func:`random_instance`, for tests that draw many instances."""
    return random_instance


def random_instance(seed: int, *, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(cost [n], loss [n, k])``: k in 3..5 tasks, 3..10 networks on random task subsets,
    costs in {0.5, 1}; losses uniform, or multiples of 1/8 (many exact ties) with ``ties``."""
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(3, 6)), int(rng.integers(3, 11))
    masks = rng.integers(1, 2**k, size=n)
    solves = np.array([[m >> t & 1 for t in range(k)] for m in masks], dtype=bool)
    values = rng.integers(1, 9, size=(n, k)) / 8.0 if ties else rng.uniform(0.01, 1.0, (n, k))
    return rng.choice([0.5, 1.0], size=n), np.where(solves, values, np.inf)
