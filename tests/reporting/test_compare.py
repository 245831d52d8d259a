import math

import numpy as np
import pytest

from pymtl.reporting import (
    ComparisonError,
    RunFormatError,
    SeedStat,
    compare_runs,
    load_run,
    profile_problems,
)


def test_groups_by_method_in_first_seen_order(scenario):
    cmp = compare_runs(scenario)
    assert [m.label for m in cmp.methods] == ["mtan+ew", "hps+ew"]
    mtan, hps = cmp.methods
    assert mtan.method == ("mtan", "ew", None)
    assert hps.seeds == (0, 1, 2)
    assert mtan.seeds == (0, 1)
    assert hps.runs == {0: scenario[1], 1: scenario[2], 2: scenario[4]}
    assert cmp.dataset == "synthetic"
    assert cmp.split == "val"
    assert cmp.tasks == ("semseg", "depth")
    assert cmp.primary == {"semseg": "miou", "depth": "rmse"}
    assert cmp.higher_is_better == {"semseg": True, "depth": False}


def test_means_and_sample_stds_hand_computed(scenario):
    mtan, hps = compare_runs(scenario).methods
    assert hps.primary["semseg"].per_seed == {0: 0.40, 1: 0.42, 2: 0.44}
    assert hps.primary["semseg"].mean == pytest.approx(0.42)
    assert hps.primary["semseg"].std == pytest.approx(0.02)
    assert hps.primary["depth"].mean == pytest.approx(1.0)
    assert hps.primary["depth"].std == pytest.approx(0.1)
    assert mtan.primary["semseg"].mean == pytest.approx(0.48)
    assert mtan.primary["semseg"].std == pytest.approx(0.02 * math.sqrt(2))
    assert mtan.primary["depth"].std == pytest.approx(0.1 * math.sqrt(2))
    assert hps.delta["per_task"].mean == pytest.approx(7 / 3)
    assert hps.delta["per_task"].std == pytest.approx(math.sqrt(7 / 3))
    assert hps.delta["per_task"].std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert hps.delta["per_metric"].mean == pytest.approx(-7 / 3)
    assert hps.delta["task_then_metric"].std == 0.0
    assert mtan.delta["per_task"].mean == pytest.approx(4.0)
    assert mtan.delta["per_task"].std == pytest.approx(math.sqrt(2))


def test_seed_stat_of_one_seed_has_nan_std():
    stat = SeedStat.of({7: 0.5})
    assert stat.mean == 0.5
    assert math.isnan(stat.std)
    assert stat.n == 1


def test_seeds_pair_across_methods(scenario):
    cmp = compare_runs(scenario)
    assert cmp.paired_seeds == (0, 1)
    assert any("hps+ew: seed(s) 2 not run by every method" in n for n in cmp.notes)
    values, higher, problems = profile_problems(cmp)
    assert problems == [("semseg", 0), ("semseg", 1), ("depth", 0), ("depth", 1)]
    assert higher == [True, True, False, False]
    assert values == {"mtan+ew": [0.50, 0.46, 0.8, 1.0], "hps+ew": [0.40, 0.42, 0.9, 1.0]}


def test_accepts_loaded_runs(scenario):
    cmp = compare_runs([load_run(p) for p in scenario[1:3]])
    assert [m.label for m in cmp.methods] == ["hps+ew"]
    assert cmp.notes == ()


def test_same_method_and_seed_twice_is_refused(fab):
    a, b = fab.run("a", seed=1), fab.run("b", seed=1)
    with pytest.raises(ComparisonError, match=rf"{a} and {b} are the same method hps\+ew with "):
        compare_runs([a, b])


def test_same_components_different_options_are_two_methods(fab):
    runs = [
        fab.run("w1", balancer_options={"weights": {"depth": 1.0}}, method=("hps", "fixed", None)),
        fab.run("w2", balancer_options={"weights": {"depth": 2.0}}, method=("hps", "fixed", None)),
        fab.run("ew", method=("hps", "ew", None)),
    ]
    labels = [m.label for m in compare_runs(runs).methods]
    assert labels == [
        "hps+fixed (balancer.weights.depth=1.0)",
        "hps+fixed (balancer.weights.depth=2.0)",
        "hps+ew",
    ]


def test_settings_that_do_not_change_results_do_not_split_methods(fab):
    a = fab.run("a", seed=0)
    b = fab.run("b", seed=1)
    text = (b / "config.toml").read_text()
    (b / "config.toml").write_text(text.replace("[train]\n", "[train]\nnum_workers = 4\n"))
    assert [m.seeds for m in compare_runs([a, b]).methods] == [(0, 1)]
    (b / "config.toml").write_text(text.replace("lr = 0.001", "lr = 0.1"))
    labels = [m.label for m in compare_runs([a, b]).methods]
    assert labels == ["hps+ew (train.lr=0.001)", "hps+ew (train.lr=0.1)"]


@pytest.mark.parametrize(
    ("options", "difference"),
    [
        ({"dataset": {"name": "nyuv2"}}, "dataset: 'synthetic' vs 'nyuv2'"),
        (
            {"dataset": {"name": "synthetic", "image_size": 64}},
            "dataset.image_size: 32 vs 64",
        ),
        ({"split": "test"}, "split: 'val' vs 'test'"),
        (
            {"tasks": {"semseg": {"primary": "miou", "higher_is_better": {"miou": True}}}},
            "tasks: ['depth', 'semseg'] vs ['semseg']",
        ),
        (
            {"tasks": {"semseg": {"primary": "pixel_acc",
                                  "higher_is_better": {"miou": True, "pixel_acc": True}},
                       "depth": {"primary": "rmse",
                                 "higher_is_better": {"rmse": False, "abs_err": False}}}},
            "tasks.semseg.primary: 'miou' vs 'pixel_acc'",
        ),
    ],
)  # fmt: skip
def test_different_dataset_split_or_tasks_are_refused(fab, options, difference):
    a = fab.run("a", method=("hps", "ew", None))
    b = fab.run("b", method=("mtan", "ew", None), **options)
    with pytest.raises(ComparisonError, match="cannot compare these runs") as info:
        compare_runs([a, b])
    assert f"{a} and {b} differ in" in str(info.value)
    assert difference in str(info.value)


def test_where_data_is_stored_does_not_matter(fab):
    a = fab.run("a", dataset={"name": "synthetic", "root": "/x", "cache_dir": "/c1"})
    b = fab.run("b", dataset={"name": "synthetic", "root": "/y"}, method=("mtan", "ew", None))
    assert len(compare_runs([a, b]).methods) == 2


def test_dataset_seed_must_match_within_a_run_seed(fab):
    data = {"name": "synthetic", "seed": 0}
    a0 = fab.run("a0", seed=0, dataset=data)
    a1 = fab.run("a1", seed=1, dataset={"name": "synthetic", "seed": 1})  # data seed = run seed
    b0 = fab.run("b0", seed=0, dataset=data, method=("mtan", "ew", None))
    assert compare_runs([a0, a1, b0]).paired_seeds == (0,)
    b1 = fab.run(
        "b1", seed=1, dataset={"name": "synthetic", "seed": 5}, method=("mtan", "ew", None)
    )
    with pytest.raises(ComparisonError, match=r"have run seed 1 but dataset seeds 1 vs 5"):
        compare_runs([a0, a1, b0, b1])


def test_run_without_summary_is_refused(fab):
    a, b = fab.run("a"), fab.run("b", seed=1, summary=False)
    with pytest.raises(RunFormatError, match=r"b/metrics\.json does not exist"):
        compare_runs([a, b])


def test_missing_primary_metric_value_is_named(fab):
    a = fab.run("a", metrics={"semseg": {"pixel_acc": 0.5}, "depth": {"rmse": 1.0}})
    with pytest.raises(
        ComparisonError, match=r"a/metrics\.json: no value at metrics\.semseg\.miou"
    ):
        compare_runs([a])


def test_bad_task_declaration_is_named(fab):
    a = fab.run("a", tasks={"semseg": {"primary": "miou", "higher_is_better": {}}})
    with pytest.raises(ComparisonError, match=r"metrics\.json: tasks\.semseg must hold a 'prim"):
        compare_runs([a])


def test_missing_delta_for_some_seeds(fab):
    runs = [
        fab.run("s0", seed=0, delta=fab.delta(1.0)),
        fab.run("s1", seed=1, delta=fab.delta(3.0)),
        fab.run("s2", seed=2),  # evaluated without a baseline
        fab.run("m0", seed=0, method=("mtan", "ew", None), delta={"error": "baseline lacks depth"}),
    ]
    hps, mtan = compare_runs(runs).methods
    assert hps.delta["per_task"].per_seed == {0: 1.0, 1: 3.0}
    assert hps.delta["per_task"].mean == pytest.approx(2.0)
    assert mtan.delta == {}
    notes = compare_runs(runs).notes
    assert "hps+ew: no Δ_MTL for seed 2 (no stored single-task baseline)" in notes
    assert "mtan+ew: no Δ_MTL for seed 0 (baseline lacks depth)" in notes


def test_different_baselines_are_noted(fab):
    runs = [
        fab.run("a", delta=fab.delta(1.0, source="baselines/one.json")),
        fab.run("b", seed=1, delta=fab.delta(1.0, source="baselines/two.json")),
    ]
    notes = compare_runs(runs).notes
    assert any("different baselines: baselines/one.json, baselines/two.json" in n for n in notes)


def test_no_runs():
    with pytest.raises(ComparisonError, match="no runs given"):
        compare_runs([])


def test_an_option_left_out_equals_its_default(fab):
    """A run written before an option existed compares as that option's default."""
    data = {"name": "synthetic", "image_size": 32}  # resolvable with today's components
    a = fab.run("a", seed=0, dataset=data)
    b = fab.run("b", seed=1, dataset=data)
    text = (b / "config.toml").read_text()
    (b / "config.toml").write_text(text.replace("[train]\n", '[train]\ngrad_mode = "auto"\n'))
    assert [m.seeds for m in compare_runs([a, b]).methods] == [(0, 1)]
    (b / "config.toml").write_text(text.replace("[train]\n", '[train]\ngrad_mode = "gram"\n'))
    labels = [m.label for m in compare_runs([a, b]).methods]
    assert labels == ["hps+ew (train.grad_mode='auto')", "hps+ew (train.grad_mode='gram')"]
