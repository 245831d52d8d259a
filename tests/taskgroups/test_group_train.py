"""``pymtl group train``: candidate lists, shards, refusals, and tiny runs end to end."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner, Result

from pymtl.cli import main
from pymtl.config import BackboneSection, RunConfig, resolve_config
from pymtl.errors import ConfigError
from pymtl.plugins import Registry, get_registry
from pymtl.taskgroups import Candidate, CandidateSet, merge_candidates, read_candidates
from pymtl.taskgroups._candidate_run import LOSSES_FILE
from pymtl.taskgroups.training import (
    CandidateSpec,
    GroupTrainPlan,
    candidate_config,
    candidate_list,
    check_base,
    parse_shard,
    take_shard,
)

TINY = [
    "dataset.image_size=16",
    "dataset.train_size=16",
    "dataset.val_size=8",
    "dataset.test_size=8",
    "train.epochs=1",
    "train.batch_size=8",
    'arch.backbone.name="convnet"',
    "arch.backbone.width=4",
    "arch.head_channels=4",
]
BASE = ["group", "train", "--dataset", "synthetic", "--preset", "smoke"]
BASE += [a for s in TINY for a in ("--set", s)]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    monkeypatch.setenv("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def invoke(*args: object) -> Result:
        return runner.invoke(main, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="module")
def registry() -> Registry:
    return get_registry(autoload=False)


def _base(registry: Registry, *overrides: str) -> RunConfig:
    tasks = ["semseg", "depth", "normals"]
    doc = {"dataset": {"name": "synthetic", "tasks": tasks}, "arch": {"name": "hps"}}
    return resolve_config(doc, registry, overrides=[*TINY, *overrides])


def _find(cset: CandidateSet, tasks: Sequence[str], width: float) -> Candidate:
    found = cset.find(tasks, width)
    assert found is not None, (tasks, width)
    return found


def _options(config: RunConfig) -> tuple[Any, Any]:
    """The dataset's and the architecture's options."""
    assert config.dataset is not None
    assert config.arch is not None
    return config.dataset.options, config.arch.options


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_candidate_list_counts_and_order(k: int) -> None:
    tasks = [f"t{i}" for i in range(k)]
    full = candidate_list(tasks, "full")
    hoa = candidate_list(tasks, "hoa")
    assert len(full) == 2**k - 1 + k
    assert len(hoa) == k + k * (k - 1) // 2 + k
    assert candidate_list(tasks, "esa") == full
    assert len({(frozenset(c.tasks), c.width) for c in full}) == len(full)
    assert [len(c.tasks) for c in full] == sorted(len(c.tasks) for c in full)
    assert hoa == full[: len(hoa)]
    assert [c.width for c in full if len(c.tasks) == 1] == [1.0] * k + [0.5] * k
    assert all(c.width == 1.0 for c in full if len(c.tasks) > 1)


def test_candidate_names_and_run_dirs() -> None:
    specs = candidate_list(["s", "d", "n"], "full", reduced_width=0.25)
    assert [c.name for c in specs] == [
        "s", "d", "n", "s@0.25", "d@0.25", "n@0.25", "s+d", "s+n", "d+n", "s+d+n",
    ]  # fmt: skip
    assert [c.run_name for c in specs[:4]] == ["s@1", "d@1", "n@1", "s@0.25"]
    assert CandidateSpec(("a/b", "c d")).run_name == "a_b+c_d@1"
    plan = GroupTrainPlan(mode="esa", esa_fraction=0.5, root="R", shard=(2, 4))
    assert str(plan.run_dir(specs[-1])) == "R/esa-0.5/s+d+n@1"
    assert str(plan.out_path) == "R/candidates-esa-shard2of4.toml"
    assert str(GroupTrainPlan(root="R").out_path) == "R/candidates.toml"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shards_are_disjoint_and_cover_every_candidate(n: int) -> None:
    specs = candidate_list(["a", "b", "c"], "full")  # 10 networks
    shards = [take_shard(specs, (i, n)) for i in range(1, n + 1)]
    names = [c.name for shard in shards for c in shard]
    assert sorted(names) == sorted(c.name for c in specs)
    assert len(names) == len(set(names))


def test_shard_strings() -> None:
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ["0/2", "3/2", "2", "a/b", "1/0", "-1/2", "1/2/3"]:
        with pytest.raises(ConfigError, match=r"expected I/N with 1 <= I <= N, e\.g\. 2/4"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="there are 5 candidates, so use at most 5 shards"):
        take_shard(candidate_list(["a", "b"], "full"), (6, 8))


def test_candidate_config_restricts_tasks_and_scales_width(registry: Registry) -> None:
    base = _base(registry, "dataset.labelled_fraction.depth=0.5", "arch.backbone.width=5")
    half = candidate_config(base, CandidateSpec(("semseg",), 0.5), esa_steps=3)
    data, arch = _options(half)
    assert data.tasks == ("semseg",)
    assert data.labelled_fraction == {}  # keyed by task: depth dropped
    assert arch.backbone.options.width == 2  # round(5 * 0.5), banker's rounding
    assert (half.train.epochs, half.train.steps_per_epoch) == (1, 3)
    data, arch = _options(candidate_config(base, CandidateSpec(("depth",), 0.01)))
    assert arch.backbone.options.width == 1
    assert data.labelled_fraction == {"depth": 0.5}
    pair = candidate_config(base, CandidateSpec(("semseg", "depth")))
    assert pair.arch == base.arch
    assert pair.train == base.train


def test_refuses_bases_it_cannot_train(registry: Registry) -> None:
    @attrs.frozen
    class NoWidth:
        depth: int = 2

    base = _base(registry)
    assert base.arch is not None
    backbone = BackboneSection(name="mine", options=NoWidth())
    no_width = attrs.evolve(base.arch, options=attrs.evolve(_options(base)[1], backbone=backbone))
    with pytest.raises(ConfigError, match=r"backbone 'mine' has no integer 'width' option"):
        check_base(attrs.evolve(base, arch=no_width))
    with pytest.raises(ConfigError, match="got --arch 'mtan', expected hps"):
        check_base(_base(registry, 'arch.name="mtan"'))
    with pytest.raises(ConfigError, match="got --balancer 'uw', expected ew"):
        check_base(_base(registry, 'balancer.name="uw"'))
    with pytest.raises(ConfigError, match=r"tasks \['a', 'a'\]: expected one or more distinct"):
        candidate_list(["a", "a"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "5/4"], "--shard '5/4': expected I/N with 1 <= I <= N"),
        (["--arch", "mtan"], "trains hard-sharing candidates (SPEC §4.1); got --arch 'mtan'"),
        (["--tasks", "semseg,sky"], "refuses tasks ['semseg', 'sky']: 'tasks' has unknown"),
        (["--tasks", "semseg,,depth"], "--tasks 'semseg,,depth': an empty name; expected"),
        (["--grouping", __file__], "--grouping is for `pymtl train --arch branched`"),
        (["--mode", "hoa", "--shard", "8/8", "--tasks", "semseg,depth"], "at most 5 shards"),
    ],
)
def test_cli_refusals(
    run: Callable[..., Result], tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(*BASE, "--root", tmp_path / "g", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "g").exists()  # refused before any training


def test_hoa_end_to_end_then_select_and_skip(run: Callable[..., Result], tmp_path: Path) -> None:
    root = tmp_path / "g"
    args = [*BASE, "--tasks", "semseg,depth,normals", "--mode", "hoa", "--root", root]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count("trained in") == 9
    cset = read_candidates(root / "candidates-hoa.toml")
    assert cset.tasks == ("semseg", "depth", "normals")
    assert cset.splits == ("val", "test")
    assert [c.name for c in cset.candidates][3:6] == ["semseg@0.5", "depth@0.5", "normals@0.5"]
    for c in cset.candidates:
        record = json.loads((root / f"{'+'.join(c.tasks)}@{c.width:g}" / LOSSES_FILE).read_text())
        assert record["losses"]["val"] == dict(zip(c.tasks, c.losses["val"], strict=True))
        assert c.info == {
            "run": str(root / f"{'+'.join(c.tasks)}@{c.width:g}"),
            "macs": record["macs"],
        }
        assert c.cost == c.width
    half = tomllib.loads((root / "semseg@0.5" / "config.toml").read_text())
    assert half["arch"]["backbone"]["width"] == 2
    assert half["dataset"]["tasks"] == ["semseg"]
    assert _find(cset, ["semseg"], 1).info["macs"] > _find(cset, ["semseg"], 0.5).info["macs"]

    out = tmp_path / "sel"
    result = run("group", "select", root / "candidates-hoa.toml", "--hoa", "--budget", "1.5,3",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"table.txt", "grouping-b1.5.toml", "grouping-b3.toml", "grouping-hoa-b3.toml"} <= names

    again = run(*args)
    assert again.exit_code == 0, again.output
    assert again.output.count("finished earlier, skipped") == 9
    assert "trained in" not in again.output
    assert read_candidates(root / "candidates-hoa.toml") == cset


def test_esa_shards_in_parallel_processes_merge(run: Callable[..., Result], tmp_path: Path) -> None:
    root = tmp_path / "g"
    args = [*BASE, "--tasks", "semseg,depth", "--mode", "esa", "--root", root]
    first = run(*args, "--shard", "1/2", "--cost", "macs")  # semseg, semseg@0.5, semseg+depth
    assert first.exit_code == 0, first.output
    second = run(*args, "--shard", "2/2", "--cost", "macs", "--jobs", "2")  # depth, depth@0.5
    assert second.exit_code == 0, second.output
    assert second.output.count("trained in") == 2
    shards = [root / f"candidates-esa-shard{i}of2.toml" for i in (1, 2)]
    cset = merge_candidates(shards)
    assert cset.splits == ("esa", "esa-test")
    assert sorted(c.name for c in cset.candidates) == sorted(
        c.name for c in candidate_list(["semseg", "depth"], "esa")
    )
    singles = [_find(cset, [t], 1) for t in ("semseg", "depth")]
    assert math.isclose(sum(c.cost for c in singles), 2.0)  # 1 SNT = their mean MACs
    assert _find(cset, ["semseg"], 0.5).cost < 0.5  # narrower backbone, same head
    config = tomllib.loads((root / "esa-0.2" / "depth@0.5" / "config.toml").read_text())
    assert (config["train"]["epochs"], config["train"]["steps_per_epoch"]) == (1, 1)
    result = run("group", "select", *shards, "--split", "esa", "--score-split", "esa-test",
                 "--out", tmp_path / "sel")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sel" / "grouping-b2.toml").is_file()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_candidate_is_named_and_its_error_raised(
    run: Callable[..., Result], tmp_path: Path, jobs: int
) -> None:
    root = tmp_path / "g"
    broken = root / "semseg@1" / "checkpoints" / "last.pt"  # an interrupted run, say
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    result = run(*BASE, "--tasks", "semseg", "--root", root, "--jobs", jobs)
    assert result.exit_code == 2, result.output
    assert f"candidate 'semseg' ({root / 'semseg@1'}) failed: CheckpointError" in result.output
    assert "error: checkpoint" in result.output
    assert "is unreadable" in result.output
    assert not (root / "candidates.toml").exists()
