"""Candidate files (SPEC-methods §4.1, format of pymtl.taskgroups.candidates): reading,
writing, validation messages and merging of shard files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tomli_w

from pymtl.taskgroups import (
    CandidateFormatError,
    CandidateSet,
    merge_candidates,
    read_candidates,
    write_candidates,
)

FIXTURE = Path(__file__).parent / "fixtures" / "standley_setting1.toml"


def _doc(**top):
    doc = {"format": "pymtl-group-candidates", "version": 1, "tasks": ["a", "b"]}
    doc["splits"] = ["val", "test"]
    doc["candidate"] = [
        {"name": "ab", "tasks": ["a", "b"], "loss": {"val": [0.1, 0.2], "test": [0.11, 0.21]}},
        {"name": "a-half", "tasks": ["a"], "width": 0.5, "loss": {"val": [0.3], "test": [0.31]}},
    ]
    doc.update(top)
    return {key: value for key, value in doc.items() if value is not None}


def _with(index, **changes):
    doc = _doc()
    entry = dict(doc["candidate"][index])
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    doc["candidate"][index] = entry
    return doc


def test_fixture_reads(standley):
    assert standley.tasks == ("s", "d", "n", "k", "e")
    assert standley.splits == ("val", "test", "esa")
    assert len(standley.candidates) == 36
    assert standley.costs().tolist() == [0.5] * 5 + [1.0] * 31
    sdnke = standley.find("ekdns", 1.0)
    assert sdnke is not None
    assert sdnke.losses["val"] == (0.07854, 0.1864, 0.1, 0.09814, 0.04453)
    L = standley.loss_matrix("test")
    assert L.shape == (36, 5)
    assert math.isinf(L[0, 1])
    assert L[0, 0] == 0.07742


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_round_trip(tmp_path, standley, suffix):
    path = write_candidates(standley, tmp_path / f"c{suffix}")
    back = read_candidates(path)
    assert back.to_document() == standley.to_document()
    assert back.candidates == standley.candidates


def test_from_entries_defaults():
    cs = CandidateSet.from_entries(
        ["a", "b"],
        ["val"],
        [
            {"tasks": ["a", "b"], "loss": {"val": [0.1, 0.2]}, "info": {"run": "runs/ab"}},
            {"tasks": ["b"], "width": 0.5, "loss": {"val": [0.3]}},
            {"tasks": ["a"], "width": 0.5, "cost": 0.4, "loss": {"val": [0.3]}},
        ],
    )
    assert [c.name for c in cs.candidates] == ["a+b", "b@0.5", "a@0.5"]
    assert [c.cost for c in cs.candidates] == [1.0, 0.5, 0.4]
    assert cs.candidates[0].info == {"run": "runs/ab"}
    assert cs.candidates[1].loss("val", "a") == math.inf


BAD = [
    ("format", _doc(format="other"), "'format' is 'other'; expected format = 'pymtl-group-cand"),
    ("version", _doc(version=2), "unsupported 'version' 2; this pymtl reads version 1"),
    ("top-key", _doc(extra=1), "unknown key(s) ['extra']"),
    ("no-tasks", _doc(tasks=[]), "'tasks' must be a non-empty list"),
    ("task-twice", _doc(tasks=["a", "a"]), "'tasks' lists ['a'] more than once"),
    ("no-splits", _doc(splits=None), "'splits' must be a non-empty list"),
    ("no-candidates", _doc(candidate=[]), "no [[candidate]] table"),
    ("entry-not-table", _doc(candidate=[3]), "candidate 0 (counting [[candidate]] tables from 0)"),
    ("entry-key", _with(1, color="red"), "candidate 1 'a-half' (counting"),
    ("unknown-task", _with(0, tasks=["a", "z"]), "unknown task(s) ['z']; expected tasks of"),
    ("no-entry-tasks", _with(0, tasks=None), "no 'tasks'; expected the tasks this network"),
    ("entry-task-twice", _with(0, tasks=["a", "a"]), "'tasks' lists ['a'] more than once"),
    ("width", _with(1, width=-0.5), "'width' must be a finite number > 0 (got -0.5)"),
    ("cost-zero", _with(1, cost=0), "'cost' must be a finite number > 0 (got 0)"),
    ("cost-nan", _with(1, cost=math.nan), "'cost' must be a finite number > 0 (got nan)"),
    ("cost-bool", _with(1, cost=True), "'cost' must be a finite number > 0 (got True)"),
    ("name", _with(0, name=""), "'name' must be a non-empty string"),
    ("loss-not-table", _with(0, loss=[0.1]), "'loss' must be a table split = [losses]"),
    ("missing-split", _with(0, loss={"val": [0.1, 0.2]}), "missing split(s) ['test'] in 'loss'"),
    (
        "unknown-split",
        _with(0, loss={"val": [0.1, 0.2], "test": [0.1, 0.2], "esa": [0.1, 0.2]}),
        "unknown key(s) ['esa']",
    ),
    (
        "length",
        _with(0, loss={"val": [0.1], "test": [0.1, 0.2]}),
        "loss.val has 1 values; expected a list of 2 losses, one per task of the candidate",
    ),
    (
        "negative",
        _with(0, loss={"val": [0.1, -0.2], "test": [0.1, 0.2]}),
        "loss.val of task 'b' is -0.2; expected a finite number >= 0",
    ),
    (
        "infinite",
        _with(0, loss={"val": [0.1, 0.2], "test": [math.inf, 0.2]}),
        "loss.test of task 'a' is inf; expected a finite number >= 0",
    ),
    (
        "string-loss",
        _with(0, loss={"val": [0.1, "x"], "test": [0.1, 0.2]}),
        "loss.val of task 'b' is 'x'",
    ),
    ("info", _with(0, info=3), "'info' must be a table"),
    ("same-name", _with(1, name="ab"), "duplicate candidate name 'ab' (candidates 0 and 1"),
    (
        "same-network",
        _with(1, tasks=["b", "a"], width=1.0, loss={"val": [0.1, 0.2], "test": [0.1, 0.2]}),
        "duplicate candidate: 1 ('a-half') and 0 ('ab') are both tasks ['a', 'b'] at width 1",
    ),
]


@pytest.mark.parametrize(("case", "doc", "message"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_malformed_files_are_refused(tmp_path, case, doc, message, suffix):
    path = tmp_path / f"{case}{suffix}"
    dumps = json.dumps if suffix == ".json" else tomli_w.dumps
    path.write_text(dumps(doc), encoding="utf-8")
    with pytest.raises(CandidateFormatError) as info:
        read_candidates(path)
    text = str(info.value)
    assert text.startswith(f"candidate file {str(path)!r}"), text
    assert message in text, text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.toml", None, "does not exist"),
        ("broken.toml", "tasks = [", "is not valid TOML"),
        ("broken.json", "{", "is not valid JSON"),
        ("list.json", "[1, 2]", "expected a table at the top"),
    ],
)
def test_unreadable_files(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(CandidateFormatError, match=message):
        read_candidates(path)


def _shards(standley, tmp_path: Path, parts: int) -> list[Path]:
    doc = standley.to_document()
    paths = []
    for p in range(parts):
        shard = dict(doc, candidate=doc["candidate"][p::parts])
        paths.append(tmp_path / f"shard-{p}.toml")
        paths[-1].write_text(tomli_w.dumps(shard), encoding="utf-8")
    return paths


def test_merge_shards(tmp_path, standley):
    merged = merge_candidates(_shards(standley, tmp_path, 3))
    assert len(merged.candidates) == 36
    assert {c.name for c in merged.candidates} == {c.name for c in standley.candidates}
    assert merged.find(("s", "d"), 1.0) == standley.find(("s", "d"), 1.0)


def test_merge_identical_duplicates_and_splits(tmp_path, standley):
    doc = standley.to_document()
    main = dict(doc, splits=["val", "test"])
    main["candidate"] = [
        dict(e, loss={s: e["loss"][s] for s in ("val", "test")}) for e in doc["candidate"]
    ]
    esa = dict(doc, splits=["esa"])
    esa["candidate"] = [dict(e, loss={"esa": e["loss"]["esa"]}) for e in doc["candidate"]]
    files = [CandidateSet.from_document(d, source=n) for d, n in ((main, "m"), (esa, "e"))]
    merged = merge_candidates([*files, files[0]])
    assert merged.splits == ("val", "test", "esa")
    assert merged.candidates == standley.candidates


def test_merge_refuses_conflicts(standley):
    doc = standley.to_document()
    other = json.loads(json.dumps(doc))
    other["candidate"][7]["loss"]["val"][0] = 0.5
    message = r"candidate 'n' in .* have different 'val' losses \[0.08591\] and \[0.5\]"
    with pytest.raises(CandidateFormatError, match=message):
        merge_candidates([standley, CandidateSet.from_document(other, source="b")])
    other = json.loads(json.dumps(doc))
    other["candidate"][7]["cost"] = 0.9
    with pytest.raises(CandidateFormatError, match="expected equal names and costs"):
        merge_candidates([standley, CandidateSet.from_document(other, source="b")])


def test_merge_refuses_other_tasks_and_missing_splits(standley):
    small = CandidateSet.from_entries(["s"], ["val"], [{"tasks": ["s"], "loss": {"val": [1.0]}}])
    with pytest.raises(CandidateFormatError, match="expected the same tasks in every file"):
        merge_candidates([standley, small])
    entry = {"name": "x", "tasks": ["s", "e"], "width": 2.0, "loss": {"val": [1.0, 1.0]}}
    extra = CandidateSet.from_entries(standley.tasks, ["val"], [entry])
    with pytest.raises(CandidateFormatError, match=r"candidate 'x' .* no losses for split"):
        merge_candidates([standley, extra])
    with pytest.raises(CandidateFormatError, match="no candidate file given"):
        merge_candidates([])


def test_fixture_file_is_the_spec_table():
    """The fixture is Appendix A typed in: spot-check a few rows against the SPEC's numbers."""
    text = FIXTURE.read_text(encoding="utf-8")
    assert 'name = "snk"' in text
    assert "val = [0.0722, 0.09919, 0.0961], test = [0.06933, 0.09966, 0.09302]" in text
    assert "esa = [0.2319, 0.3658, 0.1727, 0.2396, 0.3485]" in text
