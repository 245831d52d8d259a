"""Selections as results: min-rule assignment, scoring on another split, Table 4 text, the
Figure 5 plot and grouping files (pymtl.taskgroups.results / report)."""

from __future__ import annotations

import pytest

from pymtl.architectures.grouping import Group, read_grouping
from pymtl.taskgroups import (
    format_details,
    format_summary,
    plot_selection,
    select,
    write_groupings,
)


@pytest.fixture(scope="module")
def results(standley):
    return {
        "optimal": select(standley, split="val", score_split="test"),
        "esa": select(standley, split="esa", score_split="test"),
    }


def test_min_rule_and_scores(results):
    two = results["optimal"][2]  # budget 2: sdn and nke
    assert [n.name for n in two.networks] == ["sdn", "nke"]
    # n: 0.09575 in sdn against 0.09626 in nke -> sdn decodes n
    assert two.assignment == {"s": 0, "d": 0, "n": 0, "k": 1, "e": 1}
    assert two.task_loss["n"] == 0.09575
    assert two.score_loss["n"] == min(0.09544, 0.09596)
    assert two.deployed_total == pytest.approx(two.score_total)
    esa = results["esa"][2]  # sdke and nke: the min rule on esa is not the best on test
    assert esa.deployed_total > esa.score_total
    assert f"{esa.score_total:.3f}" == "0.467"


def test_to_grouping(results):
    grouping = results["optimal"][1].to_grouping()  # budget 1.5: s-half and dnke
    assert grouping.groups == (
        Group(tasks=("s",), width=0.5),
        Group(tasks=("d", "n", "k", "e"), width=1.0),
    )
    assert grouping.choose == {"s": 0, "d": 1, "n": 1, "k": 1, "e": 1}


def test_write_groupings_read_back(results, standley, tmp_path):
    paths = write_groupings(results["optimal"], tmp_path)
    names = [p.name for p in paths]
    assert names[:3] == ["grouping-b1.toml", "grouping-b1.5.toml", "grouping-b2.toml"]
    assert len(paths) == 9
    back = read_grouping(tmp_path / "grouping-b2.toml", tasks=standley.tasks)
    assert back == results["optimal"][2].to_grouping()
    head = (tmp_path / "grouping-b2.toml").read_text(encoding="utf-8").splitlines()[:2]
    assert head[0] == "# pymtl group select: method optimal, budget 2 SNT, cost 2"
    assert head[1] == "# networks: sdn, nke"


def test_infeasible_budgets_write_no_file(standley, tmp_path):
    sels = select(standley, [1.0, 2.0], split="val", max_loss={"s": 0.075})
    paths = write_groupings(sels, tmp_path, prefix="g")
    assert [p.name for p in paths] == ["g-b2.toml"]
    text = format_summary({"optimal": sels})
    assert "infeasible" in text


def test_tables(results):
    summary = format_summary(results)
    lines = summary.splitlines()
    assert lines[0].startswith("Total loss of the chosen networks per budget (optimal: selected")
    assert lines[2].split() == ["budget", "(SNT)", "optimal", "esa"]
    assert lines[4].split() == ["1", "0.503", "0.503"]
    assert lines[5].split() == ["1.5", "0.461", "0.487"]
    md = format_summary(results, "markdown")
    assert "| 4.5 | 0.436 | 0.447 |" in md
    details = format_details(results)
    assert "sdn nke" in details
    assert "s-half (0.08021)" in details
    assert "## esa" in format_details(results, "markdown")


def test_plot(results, tmp_path):
    path = plot_selection(results, tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
