"""Affinity tables (SPEC-methods §4.4, §6.1 item 2): Table 1 and Table 2 from Appendix A."""

from __future__ import annotations

import numpy as np
import pytest

from pymtl.taskgroups import (
    CandidateFormatError,
    CandidateSet,
    affinity_tables,
    format_affinity,
    plot_affinity,
)

# SPEC-methods §6.1 item 2: rows "trained with", columns "performance on", in %.
TABLE1 = {
    "s": {"d": "-5.41", "n": "-11.29", "k": "-4.32", "e": "-34.64"},
    "d": {"s": "4.17", "n": "-3.55", "k": "3.49", "e": "3.76"},
    "n": {"s": "8.50", "d": "2.48", "k": "1.37", "e": "12.33"},
    "k": {"s": "4.82", "d": "1.38", "n": "-0.02", "e": "-5.26"},
    "e": {"s": "3.07", "d": "-0.92", "n": "-4.42", "k": "1.37"},
}


def test_table1_exact(standley):
    tables = affinity_tables(standley, "test")
    tasks = list(tables.tasks)
    got = {
        b: {a: f"{tables.relative[tasks.index(b), tasks.index(a)]:.2f}" for a in TABLE1[b]}
        for b in TABLE1
    }
    assert got == TABLE1
    assert np.all(np.isnan(np.diag(tables.relative)))


def test_table2_examples(standley):
    tables = affinity_tables(standley, "test")
    i = {t: k for k, t in enumerate(tables.tasks)}
    aff = tables.affinity
    assert np.allclose(aff, aff.T, equal_nan=True)
    assert f"{aff[i['s'], i['e']]:.2f}" == "-15.78"
    assert f"{aff[i['n'], i['e']]:.2f}" == "3.95"
    assert f"{aff[i['s'], i['n']]:.2f}" == "-1.39"
    assert f"{aff[i['s'], i['d']]:.2f}" == "-0.62"


def test_formats_and_plot(standley, tmp_path):
    tables = affinity_tables(standley, "test")
    text = format_affinity(tables)
    assert "Table 1: relative performance on test" in text
    lines = text.splitlines()
    row_d = next(line for line in lines if line.startswith("d "))
    assert row_d.split()[1:6] == ["4.17", "–", "-3.55", "3.49", "3.76"]
    average = next(line for line in lines if line.startswith("Average"))
    column_s = np.mean([4.17, 8.50, 4.82, 3.07])
    assert f"{column_s:.2f}" == average.split()[1]
    md = format_affinity(tables, "markdown")
    assert "| trained with \\ on | s | d | n | k | e | Average |" in md
    path = plot_affinity(tables, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_networks_are_named():
    cs = CandidateSet.from_entries(
        ["a", "b"],
        ["test"],
        [
            {"tasks": ["a", "b"], "loss": {"test": [0.1, 0.2]}},
            {"tasks": ["a"], "width": 0.5, "loss": {"test": [0.12]}},
        ],
    )
    with pytest.raises(
        CandidateFormatError, match=r"half-size single-task network of tasks \['b'\]"
    ):
        affinity_tables(cs, "test")
    with pytest.raises(CandidateFormatError, match="no split 'val'"):
        affinity_tables(cs, "val")
