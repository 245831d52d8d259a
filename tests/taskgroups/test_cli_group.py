"""``pymtl group select`` and ``pymtl group affinity`` end to end on the Appendix A fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner

import pymtl.cli_group  # noqa: F401  (registers `pymtl group` on the main command)
from pymtl.architectures.grouping import Group, read_grouping
from pymtl.cli import main

FIXTURE = str(Path(__file__).parent / "fixtures" / "standley_setting1.toml")


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setenv("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "1")
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_select_writes_everything(run, tmp_path):
    out = tmp_path / "sel"
    result = run("group", "select", FIXTURE, "--esa-split", "esa", "--hoa", "--out", out)
    assert result.exit_code == 0, result.output
    assert "budget (SNT)  optimal  esa    hoa" in result.output
    files = {p.name for p in out.iterdir()}
    assert {"table.txt", "table.md", "total-loss-vs-budget.png"} <= files
    for prefix in ("grouping", "grouping-esa", "grouping-hoa"):
        assert {f"{prefix}-b{b}.toml" for b in ("1", "1.5", "2", "4.5", "5")} <= files
    assert len(files) == 3 + 27
    grouping = read_grouping(out / "grouping-b1.5.toml", tasks=["s", "d", "n", "k", "e"])
    assert grouping.groups == (Group(tasks=("s",), width=0.5), Group(tasks=tuple("dnke")))
    table = (out / "table.txt").read_text(encoding="utf-8")
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[4:13]}
    assert rows["1.5"] == ["0.461", "0.487", "0.461"]
    assert rows["5"] == ["0.435", "0.447", "0.442"]
    assert "| 2 | 0.452 | 0.467 | 0.455 |" in (out / "table.md").read_text(encoding="utf-8")


def test_select_budgets_requirements_and_shards(run, tmp_path, standley):
    doc = standley.to_document()
    shards = []
    for p in range(2):
        shards.append(tmp_path / f"shard-{p}.toml")
        shards[-1].write_text(tomli_w.dumps(dict(doc, candidate=doc["candidate"][p::2])))
    out = tmp_path / "req"
    options = ["--budget", "1,2", "--require", "s<=0.075", "--out", out]
    result = run("group", "select", *shards, *options)
    assert result.exit_code == 0, result.output
    assert "no solution meets the requirements (s<=0.075)" in result.stderr
    assert sorted(p.name for p in out.glob("grouping*")) == ["grouping-b2.toml"]
    grouping = read_grouping(out / "grouping-b2.toml")
    assert min(len(g.tasks) for g in grouping.groups) >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "1,x"], "'x' is not a number; expected budgets in SNT"),
        (["--budget", "-1"], "budget '-1' must be a finite number > 0"),
        (["--require", "s=0.1"], "expected TASK<=LOSS, e.g. depth<=0.17"),
        (["--require", "z<=0.1"], "requirement on unknown task 'z'"),
        (["--split", "train"], "no split 'train'; the candidates have losses for"),
        (["--esa-split", "val"], "--esa-split 'val' repeats --split"),
    ],
)
def test_select_bad_options(run, tmp_path, args, message):
    result = run("group", "select", FIXTURE, *args, "--out", tmp_path)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_candidate_file(run, tmp_path):
    result = run("group", "select", tmp_path / "none.toml", "--out", tmp_path)
    assert result.exit_code == 2
    assert "error: candidate file" in result.output
    assert "does not exist" in result.output


def test_affinity(run, tmp_path):
    result = run("group", "affinity", FIXTURE, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "Table 2: task affinity" in result.output
    assert {p.name for p in tmp_path.iterdir()} == {"affinity.txt", "affinity.md", "affinity.png"}
    assert "-34.64" in (tmp_path / "affinity.txt").read_text(encoding="utf-8")


def test_help_has_an_example(run):
    result = run("group", "select", "--help")
    assert result.exit_code == 0
    assert "pymtl group select runs/group/shard-*.toml" in result.output
    assert "TASK<=LOSS" in result.output
