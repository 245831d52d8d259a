"""Branched networks (``branched``) and grouping files: one group is hps, disjoint groups are
independent, overlapping groups add deep-supervision keys, ``choose``, width scaling, every
malformed grouping file refused with a precise message, conformance [pymtl]."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch

from pymtl import plugins
from pymtl.architectures.branched import Branched
from pymtl.architectures.grouping import Group, Grouping, read_grouping, write_grouping
from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNet
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.testing import check_architecture, default_tasks

TASKS = default_tasks()  # seg, depth, normals (dense), cls, count (image-level)
NAMES = [t.name for t in TASKS]
BACKBONE = BackboneSection(name="convnet", options=ConvNet.Config(width=4))
X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _net(**options: Any) -> Branched:
    torch.manual_seed(0)
    return Branched(TASKS, backbone=BACKBONE, head_channels=4, **options).eval()


def _ids(params: Any) -> set[int]:
    return {id(p) for p in params}


def test_one_group_is_hps():
    net = _net()
    hps = HardSharing(TASKS, backbone=BACKBONE, head_channels=4).eval()
    renamed = {
        k.replace("encoders.0.", "backbone.").replace("heads.0.", "heads."): v
        for k, v in net.state_dict().items()
    }
    hps.load_state_dict(renamed)  # strict: the same modules, the same shapes
    assert net.has_shared_representation
    assert _ids(net.shared_parameters()) == _ids(net.encoders[0].parameters())
    with torch.no_grad():
        out, ref = net(X), hps(X)
        again = net.decode(net.encode(X), X.shape[-2:])
    for t in NAMES:
        assert torch.equal(out[t], ref[t])
        assert torch.equal(again[t], out[t])
    assert sorted(net.train()(X)) == sorted(NAMES)  # no deep-supervision key


def test_disjoint_groups_are_independent_encoders():
    net = _net(groups=(("seg", "depth"), ("normals",), ("cls", "count")))
    assert not net.has_shared_representation
    with pytest.raises(NotImplementedError, match=r"'branched' has no single shared repr"):
        net.encode(X)
    shared = _ids(net.shared_parameters())
    assert shared == _ids(net.encoders[0].parameters()) | _ids(net.encoders[2].parameters())
    assert _ids(net.encoders[1].parameters()) <= _ids(net.task_parameters("normals"))
    with torch.no_grad():
        before = net(X)
        for p in net.encoders[0].parameters():
            p.add_(0.5)
        after = net(X)
    for t in NAMES:
        assert torch.equal(after[t], before[t]) is (t not in ("seg", "depth")), t


def test_overlapping_groups_add_deep_supervision_keys_in_training_only():
    net = _net(groups=(("seg", "depth"), ("depth", "normals", "cls", "count")))
    assert sorted(net(X)) == sorted(NAMES)
    with torch.no_grad():
        train = net.train()(X)
    assert sorted(train) == sorted([*NAMES, "depth/group1"])
    assert train["depth/group1"].shape == train["depth"].shape
    with torch.no_grad():
        z = net.encoders[1](X)
        assert torch.allclose(train["depth/group1"], net.heads[1]["depth"](z, (16, 16)))
    heads = _ids(net.heads[0]["depth"].parameters()) | _ids(net.heads[1]["depth"].parameters())
    assert heads == _ids(net.task_parameters("depth"))


def test_choose_picks_the_group_that_decodes_a_task():
    grouping = Grouping(
        groups=(Group(tasks=("seg", "depth")), Group(tasks=tuple(NAMES))), choose={"seg": 1}
    )
    net = _net(grouping=grouping)
    assert net.chosen == {"seg": 1, "depth": 0, "normals": 1, "cls": 1, "count": 1}
    with torch.no_grad():
        out = net(X)
        z = net.encoders[1](X)
        assert torch.allclose(out["seg"], net.heads[1]["seg"](z, (16, 16)))
        train = net.train()(X)
    assert sorted(k for k in train if "/" in k) == ["depth/group1", "seg/group0"]


def test_width_half_halves_the_encoder():
    grouping = Grouping(groups=(Group(tasks=tuple(NAMES)), Group(tasks=("seg",), width=0.5)))
    net = _net(grouping=grouping)
    assert [e.out_channels for e in net.encoders] == [4, 2]
    assert net.encoders[1].down[0][0][0].out_channels == 2
    assert net.heads[1]["seg"].branches[0][0].in_channels == 2


def test_width_refusals():
    with pytest.raises(ConfigError, match=r"group 0 has width 0.1: backbone width 4 × 0.1 rounds"):
        _net(grouping=Grouping(groups=(Group(tasks=tuple(NAMES), width=0.1),)))

    @attrs.frozen
    class NoWidth:
        depth: int = 2

    section = BackboneSection(name="convnet", options=NoWidth())
    with pytest.raises(ConfigError, match=r"backbone 'convnet' has no 'width' option to scale"):
        Branched(
            TASKS[:1],
            backbone=section,
            grouping=Grouping(groups=(Group(tasks=("seg",), width=0.5),)),
        )
    Branched(TASKS[:1], backbone=BACKBONE, groups=(("seg",),))  # width 1 never scales


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"groups": (("seg", "depth"),)}, r"task\(s\) \['normals', 'cls', 'count'\] are in no"),
        ({"groups": (("seg", "sky"), tuple(NAMES))}, r"unknown task\(s\) \['sky'\]; expected the"),
        ({"groups": ((), tuple(NAMES))}, r"\[\[group\]\] 0 .*'tasks' is empty"),
    ],
)
def test_inline_group_refusals(options, message):
    with pytest.raises(ConfigError, match=r"architecture 'branched'.*" + message):
        _net(**options)


def test_grouping_and_groups_are_alternatives(tmp_path):
    with pytest.raises(ValueError, match=r"'grouping' \('g.toml'\) and 'groups' \(\[\['seg'\]\]"):
        Branched.Config(grouping="g.toml", groups=(("seg",),))
    with pytest.raises(ConfigError, match=r"'grouping' and 'groups' are alternatives"):
        _net(grouping="g.toml", groups=(("seg",),))


def test_grouping_file_round_trip(tmp_path):
    grouping = Grouping(
        groups=(
            Group(tasks=("seg", "depth")),
            Group(tasks=("seg", "normals", "cls", "count"), width=0.5),
        ),
        choose={"seg": 1},
    )
    path = tmp_path / "g.toml"
    write_grouping(grouping, path, comment="written by a test\nsecond line")
    text = path.read_text()
    assert text.startswith("# written by a test\n# second line\n[[group]]\n")
    assert read_grouping(path, tasks=NAMES) == grouping
    assert read_grouping(path).chosen("seg") == 1
    net = _net(grouping=str(path))
    assert [e.out_channels for e in net.encoders] == [4, 2]


GOOD = '[[group]]\ntasks = ["seg", "depth", "normals", "cls", "count"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[group]]\nwidth = 1.0\n", r"\[\[group\]\] 0 \(groups count from 0\) has no 'tasks'"),
        (GOOD + '[[group]]\ntasks = ["seg", "sky"]\n', r"unknown task\(s\) \['sky'\]"),
        (GOOD + "[[group]]\ntasks = []\n", r"\[\[group\]\] 1 .*: 'tasks' is empty"),
        (
            GOOD + '[[group]]\ntasks = ["seg"]\nwidth = 0\n',
            r"'width' must be a number > 0.*got 0\)",
        ),
        (GOOD + '[[group]]\ntasks = ["seg"]\nwidth = "half"\n', r"got 'half'\)"),
        (GOOD + '[[group]]\ntasks = ["seg"]\nwidth = true\n', r"'width' must be .*got True\)"),
        (GOOD + '[[group]]\ntasks = ["seg", "seg"]\n', r"lists \['seg'\] more than once"),
        (
            GOOD + '[[group]]\ntasks = ["seg"]\n[choose]\ndepth = 1\n',
            r"choose.depth = 1 points at group 1, which does not contain 'depth' \(its tasks: "
            r"\['seg'\]\); groups with 'depth': \[0\]",
        ),
        (GOOD + "[choose]\nseg = 3\n", r"choose.seg = 3 is not a group index; expected an integ"),
        (GOOD + "[choose]\nseg = 0.0\n", r"choose.seg = 0.0 is not a group index"),
        ('[[group]]\ntasks = ["seg"]\n', r"task\(s\) \['depth', 'normals', 'cls', 'count'\] are"),
        ('[[group]]\ntasks = "seg"\n', r"'tasks' must be a list of names \(got 'seg'\)"),
        ("[[group]]\ntasks = [1]\n", r"'tasks' must be non-empty strings \(got \[1\]\)"),
        (GOOD + 'name = "x"\n', r"unknown key\(s\) \['name'\] in \[\[group\]\] 0"),
        ("groups = 1\n", r"unknown key\(s\) \['groups'\] in the top level; expected only \['ch"),
        ("choose = 1\n", r"no \[\[group\]\] table \(got None\); expected \[\[group\]\] tables"),
        (GOOD + "choose = 1\n", r"unknown key\(s\) \['choose'\] in \[\[group\]\] 0"),
        (GOOD.replace("[[group]]", "[group]"), r"no \[\[group\]\] table"),
        ("[[group]\n", r"is not valid TOML"),
    ],
)
def test_malformed_grouping_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^grouping file '{path}'.*" + message):
        read_grouping(path, tasks=NAMES)


def test_missing_grouping_file(tmp_path):
    with pytest.raises(ConfigError, match=r"grouping file '.*nope.toml' does not exist"):
        _net(grouping=str(tmp_path / "nope.toml"))


def test_a_non_table_choose_and_document():
    with pytest.raises(ConfigError, match=r"^doc: \[choose\] must be a table"):
        Grouping.from_document({"group": [{"tasks": ["a"]}], "choose": [0]}, source="doc")
    with pytest.raises(ConfigError, match=r"^doc: expected a table, got list"):
        Grouping.from_document([], source="doc")


@pytest.fixture
def registry(monkeypatch):
    """The registry with ``branched`` among the built-ins (until the lead lists it there)."""
    extra = tuple(m for m in ("pymtl.architectures.branched",) if m not in plugins.BUILTIN_PLUGINS)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", plugins.BUILTIN_PLUGINS + extra)
    return plugins.get_registry(autoload=False)


def test_config_from_a_run_document(registry):
    doc = {"arch": {"name": "branched", "groups": [["seg", "depth"], ["normals", "cls", "count"]]}}
    options = resolve_config(doc, registry).arch.options
    assert options.groups == (("seg", "depth"), ("normals", "cls", "count"))
    both = {"arch": {**doc["arch"], "grouping": "g.toml"}}
    with pytest.raises(ConfigError, match=r"are alternatives"):
        resolve_config(both, registry)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"groups": (("seg", "depth"), ("normals",), ("cls", "count"))},
        {
            "grouping": Grouping(
                groups=(Group(tasks=tuple(NAMES)), Group(tasks=("depth", "count"), width=0.5)),
                choose={"depth": 1},
            )
        },
    ],
    ids=["one_group", "disjoint", "overlapping"],
)
def test_conformance(options, tmp_path):
    if isinstance(options.get("grouping"), Grouping):
        path = tmp_path / "g.toml"
        write_grouping(options["grouping"], path)
        options = {"grouping": str(path)}
    config = Branched.Config(backbone=BACKBONE, head_channels=4, head_rates=(2,), **options)
    check_architecture(Branched, config=config, size=(24, 16))
