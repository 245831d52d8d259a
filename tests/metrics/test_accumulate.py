"""The contract every metric shares: batch-size and order invariance under the default
aggregation, ``labelled`` masking, NaN when nothing was added, keys = ``higher_is_better``."""

import math
from collections.abc import Callable

import pytest
import torch

from pymtl.metrics import (
    ClassificationMetric,
    DepthMetric,
    EdgeMetric,
    Metric,
    MultiLabelMetric,
    NormalsMetric,
    RegressionMetric,
    SaliencyMetric,
    SegmentationMetric,
)

N = 7  # samples


def _seg(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(N, 4, 6, 7, generator=g), torch.randint(-1, 4, (N, 6, 7), generator=g)


def _depth(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.rand(N, 1, 6, 7, generator=g) * 3
    target[target < 0.4] = 0.0  # invalid pixels
    return torch.rand(N, 1, 6, 7, generator=g) * 3 - 0.2, target


def _normals(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.nn.functional.normalize(torch.randn(N, 3, 6, 7, generator=g), dim=1)
    target[:, :, :2, :2] = 0.0
    return torch.randn(N, 3, 6, 7, generator=g), target


def _binary(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    target = (torch.rand(N, 1, 9, 9, generator=g) < 0.25).float()
    target[:, :, 0, :3] = 255.0
    return torch.randn(N, 1, 9, 9, generator=g) + 2 * target.clamp_max(1), target


def _classes(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(N, 5, generator=g), torch.randint(-1, 5, (N,), generator=g)


def _labels(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.randint(0, 2, (N, 4), generator=g).float()
    target[0, 1] = math.nan
    return torch.randn(N, 4, generator=g), target


def _values(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.randn(N, 2, generator=g)
    target[3, 0] = math.nan
    return torch.randn(N, 2, generator=g), target


CASES: dict[str, tuple[Callable[[], Metric], Callable]] = {
    "segmentation": (lambda: SegmentationMetric(num_classes=4), _seg),
    "segmentation_image": (lambda: SegmentationMetric(num_classes=4, aggregation="image"), _seg),
    "depth": (DepthMetric, _depth),
    "depth_image": (lambda: DepthMetric(aggregation="image"), _depth),
    "normals": (NormalsMetric, _normals),
    "edge": (lambda: EdgeMetric(tolerance=0.15), _binary),
    "saliency": (SaliencyMetric, _binary),
    "saliency_image": (lambda: SaliencyMetric(aggregation="image"), _binary),
    "classification": (lambda: ClassificationMetric(num_classes=5), _classes),
    "multilabel": (lambda: MultiLabelMetric(num_labels=4), _labels),
    "regression": (lambda: RegressionMetric(dims=2), _values),
}


def _run(make: Callable[[], Metric], pred, target, sizes, labelled=None) -> dict[str, float]:
    metric, start = make(), 0
    for size in sizes:
        part = slice(start, start + size)
        metric.update(pred[part], target[part], None if labelled is None else labelled[part])
        start += size
    assert start == pred.shape[0]
    return metric.compute()


@pytest.mark.parametrize("case", CASES)
def test_batch_size_and_order_invariance(case):
    make, data = CASES[case]
    pred, target = data(torch.Generator().manual_seed(0))
    reference = _run(make, pred, target, [N])
    assert set(reference) == set(make().higher_is_better)
    assert not any(math.isnan(v) for v in reference.values()), reference
    for sizes in ([1] * N, [3, 3, 1]):
        assert _run(make, pred, target, sizes) == pytest.approx(reference, rel=1e-12, abs=1e-12)
    backwards = _run(make, pred.flip(0), target.flip(0), [2, 5])
    assert backwards == pytest.approx(reference, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_labelled_samples_only(case):
    make, data = CASES[case]
    pred, target = data(torch.Generator().manual_seed(1))
    labelled = torch.tensor([True, False, True, True, False, False, True])
    masked = _run(make, pred, target, [4, 3], labelled=labelled)
    assert masked == pytest.approx(_run(make, pred[labelled], target[labelled], [4]), rel=1e-12)
    nothing = _run(make, pred, target, [N], labelled=torch.zeros(N, dtype=torch.bool))
    assert set(nothing) == set(make().higher_is_better)
    assert all(math.isnan(v) for v in nothing.values())


@pytest.mark.parametrize("case", CASES)
def test_reset_and_fresh_metric_are_nan(case):
    make, data = CASES[case]
    metric = make()
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(*data(torch.Generator().manual_seed(2)))
    metric.reset()
    assert all(math.isnan(v) for v in metric.compute().values())


def test_labelled_must_be_bool_per_sample():
    m = DepthMetric()
    with pytest.raises(ValueError, match=r"labelled must be a bool tensor of shape \(2,\)"):
        m.update(torch.ones(2, 1, 2, 2), torch.ones(2, 1, 2, 2), labelled=torch.ones(2))
    with pytest.raises(ValueError, match=r"pred and target must share the batch dimension"):
        m.update(torch.ones(3, 1, 2, 2), torch.ones(2, 1, 2, 2))


def test_mtan_compat_depends_on_batch_size():
    pred, target = _depth(torch.Generator().manual_seed(3))
    make = lambda: DepthMetric(compat="mtan")  # noqa: E731
    assert _run(make, pred, target, [N]) == pytest.approx(_run(DepthMetric, pred, target, [N]))
    assert _run(make, pred, target, [1] * N)["abs_err"] != pytest.approx(
        _run(make, pred, target, [N])["abs_err"], rel=1e-6
    )


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError, match=r"NormalsMetric: compat must be None or 'mtan'"):
        NormalsMetric(compat="libmtl")
    with pytest.raises(ValueError, match=r"DepthMetric: aggregation must be one of"):
        DepthMetric(aggregation="batch")
