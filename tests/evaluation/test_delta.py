import functools
import json
import math

import pytest

from pymtl.evaluation import (
    HIGHER_IS_BETTER,
    BaselineResult,
    delta_over_seeds,
    delta_per_metric,
    delta_per_task,
    delta_task_then_metric,
    directions_of,
    format_delta,
    primary_metrics,
)
from pymtl.tasks.base import DepthTask, NormalsTask, SegmentationTask

# A small hand-made table: seg mIoU ↑, pixel_acc ↑; depth abs ↓, rel ↓.
DIRECTIONS = {
    "seg": {"miou": True, "pixel_acc": True},
    "depth": {"abs_err": False, "rel_err": False},
}
BASE = {"seg": {"miou": 0.40, "pixel_acc": 0.50}, "depth": {"abs_err": 0.50, "rel_err": 0.20}}
MTL = {"seg": {"miou": 0.44, "pixel_acc": 0.45}, "depth": {"abs_err": 0.45, "rel_err": 0.25}}
# signed relative changes, % (improvement > 0):
#   miou +10 (0.44 vs 0.40), pixel_acc −10 (0.45 vs 0.50),
#   abs_err +10 (0.45 vs 0.50, lower is better), rel_err −25 (0.25 vs 0.20)
PRIMARY = {"seg": "miou", "depth": "abs_err"}


def test_per_task_hand_computed():
    # (+10 + 10)/2 = +10
    assert delta_per_task(MTL, BASE, DIRECTIONS, primary=PRIMARY) == pytest.approx(10.0)
    # with rel_err as depth's primary: (+10 − 25)/2 = −7.5
    primary = {"seg": "miou", "depth": "rel_err"}
    assert delta_per_task(MTL, BASE, DIRECTIONS, primary=primary) == pytest.approx(-7.5)


def test_per_metric_has_the_opposite_sign():
    # −(10 − 10 + 10 − 25)/4 = +3.75: positive means worse here
    assert delta_per_metric(MTL, BASE, DIRECTIONS) == pytest.approx(3.75)
    only = {"seg": ["miou"], "depth": ["abs_err"]}
    assert delta_per_metric(MTL, BASE, DIRECTIONS, metrics=only) == pytest.approx(
        -delta_per_task(MTL, BASE, DIRECTIONS, primary=PRIMARY)
    )


def test_per_metric_with_cagrad_nyuv2_baseline():
    """The 9 NYUv2 metrics and CAGrad's STL values (SPEC-data §2.8, nash-mtl ``delta_fn``)."""
    names = {
        "seg": ["miou", "pixel_acc"],
        "depth": ["abs_err", "rel_err"],
        "normals": ["mean", "median", "within_11.25", "within_22.5", "within_30"],
    }
    values = [0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720, 0.6915]
    higher = [True, True, False, False, False, False, True, True, True]  # SIGN = 1,1,0,0,0,0,1,1,1
    flat = [(t, m) for t, ms in names.items() for m in ms]
    base = {t: {m: values[flat.index((t, m))] for m in ms} for t, ms in names.items()}
    directions = {t: {m: higher[flat.index((t, m))] for m in ms} for t, ms in names.items()}
    better_seg = {**base, "seg": {"miou": 0.3830 * 1.1, "pixel_acc": 0.6376}}
    # mIoU +10 %, the 8 others unchanged → Δm = −10/9
    assert delta_per_metric(better_seg, base, directions) == pytest.approx(-10 / 9)
    worse_normals = {**better_seg, "normals": {**base["normals"], "mean": 25.01 * 1.1}}
    # mIoU +10 %, normals mean 10 % worse (lower is better) → −(10 − 10)/9 = 0
    assert delta_per_metric(worse_normals, base, directions) == pytest.approx(0.0, abs=1e-12)


def test_task_then_metric_hand_computed():
    # seg (10 − 10)/2 = 0; depth (10 − 25)/2 = −7.5 → (0 − 7.5)/2 = −3.75
    assert delta_task_then_metric(MTL, BASE, DIRECTIONS) == pytest.approx(-3.75)


def test_weighting_differs_between_flattened_and_task_mean():
    """Three normals metrics vs one seg metric: the flattened variant gives normals 3/4 of the
    weight, the task-then-metric variant 1/2."""
    directions = {"seg": {"miou": True}, "normals": {"mean": False, "median": False, "rmse": False}}
    base = {"seg": {"miou": 0.5}, "normals": {"mean": 20.0, "median": 10.0, "rmse": 40.0}}
    mtl = {"seg": {"miou": 0.6}, "normals": {"mean": 22.0, "median": 11.0, "rmse": 44.0}}
    # seg +20 %; every normals metric 10 % worse → −10
    assert delta_per_metric(mtl, base, directions) == pytest.approx(-(20 - 30) / 4)
    assert delta_task_then_metric(mtl, base, directions) == pytest.approx((20 - 10) / 2)


def test_identical_runs_give_zero():
    for fn in (delta_per_metric, delta_task_then_metric):
        assert fn(BASE, BASE, DIRECTIONS) == 0.0
    assert delta_per_task(BASE, BASE, DIRECTIONS, primary=PRIMARY) == 0.0


NYUD_DIRECTIONS = {"seg": {"miou": True}, "depth": {"rmse": False}}
NYUD_PRIMARY = {"seg": "miou", "depth": "rmse"}


def _nyud(seg: float, depth: float) -> dict[str, dict[str, float]]:
    return {"seg": {"miou": seg}, "depth": {"rmse": depth}}


@pytest.mark.parametrize(
    ("row", "base", "printed", "recomputed"),
    [
        # Vandenhende et al. survey, Table V(a) NYUD-v2; SPEC-methods §5.8 / §6.1(3)
        ((44.4, 0.587), (43.9, 0.585), 0.41, 0.40),  # MTL baseline
        ((45.0, 0.584), (43.9, 0.585), 1.32, 1.34),  # MTAN
        ((44.2, 0.570), (43.9, 0.585), 1.61, 1.62),  # cross-stitch
        ((44.2, 0.573), (43.9, 0.585), 1.38, 1.37),  # NDDR-CNN
        ((46.4, 0.501), (43.9, 0.585), 10.02, 10.03),  # JTRL
        ((50.4, 0.530), (43.9, 0.585), 12.10, 12.10),  # PAP-Net
        ((50.2, 0.582), (43.9, 0.585), 7.43, 7.43),  # PAD-Net
        ((36.0, 0.630), (35.3, 0.648), 2.38, 2.38),  # PAD-Net HRNet-18
        ((38.6, 0.593), (35.3, 0.648), 8.95, 8.92),  # MTI-Net HRNet-18
    ],
)
def test_survey_table_v_nyud(row, base, printed, recomputed):
    value = delta_per_task(_nyud(*row), _nyud(*base), NYUD_DIRECTIONS, primary=NYUD_PRIMARY)
    assert round(value, 2) == pytest.approx(recomputed)
    assert value == pytest.approx(printed, abs=0.05)


PASCAL_DIRECTIONS = {
    "seg": {"miou": True},
    "parts": {"miou": True},
    "normals": {"mean": False},
    "sal": {"max_iou": True},
    "edge": {"odsF": True},
}
PASCAL_PRIMARY = {
    "seg": "miou",
    "parts": "miou",
    "normals": "mean",
    "sal": "max_iou",
    "edge": "odsF",
}


def _pascal(*values: float) -> dict[str, dict[str, float]]:
    return {task: {PASCAL_PRIMARY[task]: v} for task, v in zip(PASCAL_PRIMARY, values, strict=True)}


STL_R18 = _pascal(66.2, 59.9, 13.9, 66.3, 68.8)
STL_HR18 = _pascal(59.5, 61.4, 14.0, 67.3, 72.6)


@pytest.mark.parametrize(
    ("row", "base", "printed", "recomputed"),
    [
        # survey Table V(b) PASCAL-Context (seg, parts, normals ↓, sal, edge)
        ((63.8, 58.6, 14.9, 65.1, 69.2), STL_R18, -2.86, -2.84),  # MTL baseline R-18
        ((65.4, 60.5, 13.9, 66.8, 69.8), STL_R18, 0.39, 0.40),  # NDDR-CNN
        ((64.3, 62.1, 14.8, 68.0, 73.4), STL_HR18, 1.13, 1.13),  # MTI-Net HRNet-18
    ],
)
def test_survey_table_v_pascal(row, base, printed, recomputed):
    value = delta_per_task(_pascal(*row), base, PASCAL_DIRECTIONS, primary=PASCAL_PRIMARY)
    assert round(value, 2) == pytest.approx(recomputed)
    assert value == pytest.approx(printed, abs=0.05)


def test_survey_rows_that_do_not_recompute():
    """SPEC-methods §6.1(3): the printed Δ of these rows is inconsistent with their printed
    metrics; the recomputed values are what pymtl gives (NYUD GradNorm 0.68, not +1.45)."""
    stl = _nyud(43.9, 0.585)
    grad_norm = delta_per_task(_nyud(44.2, 0.581), stl, NYUD_DIRECTIONS, primary=NYUD_PRIMARY)
    assert round(grad_norm, 2) == pytest.approx(0.68)
    pad = delta_per_task(
        _pascal(63.2, 59.3, 15.2, 64.3, 60.2), STL_R18, PASCAL_DIRECTIONS, primary=PASCAL_PRIMARY
    )
    assert round(pad, 2) == pytest.approx(-6.08)


def test_missing_and_invalid_inputs_are_named():
    with pytest.raises(ValueError, match=r"delta_per_task: the MTL results lack task 'depth'"):
        delta_per_task({"seg": MTL["seg"]}, BASE, DIRECTIONS, primary=PRIMARY)
    with_rmse = {"depth": {"rmse": 0.6}}
    with pytest.raises(
        ValueError, match=r"task 'depth': the baseline lack metric 'rmse' \(have: abs_"
    ):
        delta_per_task(with_rmse, BASE, DIRECTIONS, primary={"depth": "rmse"})
    with pytest.raises(ValueError, match=r"delta_per_metric: the directions lack task 'seg'"):
        delta_per_metric(MTL, BASE, {"depth": DIRECTIONS["depth"]})
    zero = {"seg": BASE["seg"], "depth": {"abs_err": 0.0, "rel_err": 0.2}}
    with pytest.raises(
        ValueError, match=r"task 'depth', metric 'abs_err': the baseline value is 0"
    ):
        delta_task_then_metric(MTL, zero, DIRECTIONS)
    nan = {"seg": {"miou": math.nan, "pixel_acc": 0.5}, "depth": MTL["depth"]}
    with pytest.raises(ValueError, match=r"metric 'miou': values must be finite"):
        delta_per_metric(nan, BASE, DIRECTIONS)
    with pytest.raises(ValueError, match=r"no metrics selected"):
        delta_per_metric(MTL, BASE, DIRECTIONS, metrics={"seg": []})


def test_format_delta_states_direction():
    assert format_delta(1.234, "delta_per_task") == "+1.23 % (↑ better)"
    assert format_delta(-4.04, "delta_per_metric") == "-4.04 % (↓ better)"
    assert HIGHER_IS_BETTER == {
        "delta_per_task": True,
        "delta_per_metric": False,
        "delta_task_then_metric": True,
    }
    with pytest.raises(ValueError, match=r"unknown Δ variant 'delta'"):
        format_delta(0.0, "delta")


def test_directions_and_primaries_from_tasks():
    tasks = [
        SegmentationTask(name="seg", num_classes=3),
        DepthTask(name="depth"),
        NormalsTask(name="n"),
    ]
    directions = directions_of(tasks)
    assert directions["seg"] == {"miou": True, "pixel_acc": True}
    assert directions["depth"]["rmse"] is False
    assert directions["n"]["within_11.25"] is True
    assert primary_metrics(tasks) == {"seg": "miou", "depth": "rmse", "n": "mean"}


def _record(seed: int, miou: float) -> BaselineResult:
    return BaselineResult(
        metrics={"seg": {"miou": miou}}, seed=seed, config_hash="c0ffee", source=f"runs/stl-{seed}"
    )


def test_baseline_record_round_trips_through_json():
    record = BaselineResult(
        metrics={"seg": {"miou": 0.4, "pixel_acc": math.nan}},
        seed=3,
        config_hash="abc",
        source="runs/stl-seg-3",
        pymtl_version="0.1.0",
    )
    text = json.dumps(record.to_dict(), allow_nan=False)  # NaN is written as null
    again = BaselineResult.from_dict(json.loads(text))
    assert again.metrics["seg"]["miou"] == 0.4
    assert math.isnan(again.metrics["seg"]["pixel_acc"])
    assert (again.seed, again.config_hash, again.source) == (3, "abc", "runs/stl-seg-3")
    import pymtl

    assert _record(0, 0.4).pymtl_version == pymtl.__version__


def test_baseline_record_errors_name_the_problem():
    good = _record(0, 0.4).to_dict()
    with pytest.raises(ValueError, match=r"b.json: .*missing: seed; unknown: extra"):
        BaselineResult.from_dict(
            {**{k: v for k, v in good.items() if k != "seed"}, "extra": 1}, where="b.json"
        )
    with pytest.raises(ValueError, match=r"metrics\['seg'\]\['miou'\] must be a number"):
        BaselineResult.from_dict({**good, "metrics": {"seg": {"miou": "high"}}})


def test_delta_over_seeds_pairs_by_seed():
    directions = {"seg": {"miou": True}}
    baselines = [_record(1, 0.40), _record(2, 0.50)]
    mtl = {2: {"seg": {"miou": 0.55}}, 1: {"seg": {"miou": 0.42}}}  # +10 %, +5 %
    fn = functools.partial(delta_per_task, directions=directions, primary={"seg": "miou"})
    summary = delta_over_seeds(mtl, baselines, fn)
    assert summary.per_seed == pytest.approx({1: 5.0, 2: 10.0})
    assert summary.mean == pytest.approx(7.5)
    assert summary.std == pytest.approx(math.sqrt(((5 - 7.5) ** 2 + (10 - 7.5) ** 2) / 1))
    assert str(summary) == "+7.50 ± 3.54 % over 2 seed(s)"
    one = delta_over_seeds({1: mtl[1]}, {1: baselines[0]}, fn)
    assert one.mean == pytest.approx(5.0)
    assert math.isnan(one.std)
    with pytest.raises(ValueError, match=r"must pair up by seed .*unpaired: \[3\]"):
        delta_over_seeds({1: mtl[1], 3: mtl[2]}, {1: baselines[0]}, fn)
