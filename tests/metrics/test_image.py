import math

import pytest
import torch

from pymtl.metrics.image import ClassificationMetric, MultiLabelMetric, RegressionMetric

NAN = math.nan


def test_classification_hand_computed():
    # argmax [1, 0, 2, 2]; target [1, 2, 2, -1 (ignored)] → 2 correct of 3
    logits = torch.tensor([[0.0, 3, 1], [5, 1, 0], [0, 0, 1], [0, 0, 9]])
    m = ClassificationMetric(num_classes=3)
    m.update(logits, torch.tensor([1, 2, 2, -1]))
    assert m.compute() == {"accuracy": pytest.approx(2 / 3)}
    hard = ClassificationMetric(num_classes=3)
    hard.update(torch.tensor([1, 0, 2, 2]), torch.tensor([1, 2, 2, -1]))
    assert hard.compute() == m.compute()


def test_classification_perfect_empty_and_errors():
    m = ClassificationMetric(num_classes=4)
    m.update(torch.tensor([3, 1]), torch.tensor([3, 1]))
    assert m.compute() == {"accuracy": 1.0}
    empty = ClassificationMetric(num_classes=4)
    empty.update(torch.tensor([3, 1]), torch.tensor([-1, -1]))
    assert math.isnan(empty.compute()["accuracy"])
    with pytest.raises(ValueError, match=r"target holds 4 \(expected class indices in \[0, 4\)"):
        m.update(torch.tensor([0]), torch.tensor([4]))
    with pytest.raises(ValueError, match=r"pred must be \[B, 4\] logits or \[B\] labels"):
        m.update(torch.zeros(1, 3), torch.tensor([0]))


def test_multilabel_hand_computed():
    # 3 samples × 3 labels; logits > 0 predict the label; NaN target = missing
    #   label 0: pred [1, 1, 0], truth [1, 0, 0] → TP 1 FP 1 FN 0 TN 1 → acc 2/3, F1 2/3
    #   label 1: pred [0, 1, 1], truth [0, 1, —] → TP 1 TN 1 (2 valid) → acc 1, F1 1
    #   label 2: pred [0, 0, 0], truth [0, 0, 0] → no positives: acc 1, F1 undefined (skipped)
    # accuracy = (2/3 + 1 + 1)/3 = 8/9; F1 = (2/3 + 1)/2 = 5/6
    logits = torch.tensor([[2.0, -1, -1], [2, 3, -2], [-1, 1, -3]])
    target = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, NAN, 0]])
    m = MultiLabelMetric(num_labels=3)
    m.update(logits, target)
    assert m.compute() == pytest.approx({"accuracy": 8 / 9, "f1": 5 / 6})


def test_multilabel_predicted_positive_without_target_positive_scores_zero_f1():
    m = MultiLabelMetric(num_labels=1)
    m.update(torch.tensor([[1.0], [-1.0]]), torch.tensor([[0.0], [0.0]]))  # FP 1, TN 1
    assert m.compute() == {"accuracy": 0.5, "f1": 0.0}


def test_multilabel_perfect_and_empty():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m = MultiLabelMetric(num_labels=2)
    m.update(target * 4 - 2, target)
    assert m.compute() == {"accuracy": 1.0, "f1": 1.0}
    empty = MultiLabelMetric(num_labels=2)
    empty.update(torch.zeros(1, 2), torch.full((1, 2), NAN))
    assert all(math.isnan(v) for v in empty.compute().values())
    with pytest.raises(ValueError, match=r"target must hold 0, 1 or NaN \(got values \[0.5\]\)"):
        m.update(torch.zeros(1, 2), torch.tensor([[0.5, 1.0]]))


def test_regression_hand_computed():
    # errors: (1−2, 4−2) in dim 0; (0−0, NaN target skipped) in dim 1 → |e| = 1, 2, 0
    # mae = 3/3 = 1; rmse = sqrt((1 + 4 + 0)/3) = sqrt(5/3)
    m = RegressionMetric(dims=2)
    m.update(torch.tensor([[1.0, 0.0], [4.0, 7.0]]), torch.tensor([[2.0, 0.0], [2.0, NAN]]))
    assert m.compute() == pytest.approx({"mae": 1.0, "rmse": math.sqrt(5 / 3)})


def test_regression_flat_targets_perfect_and_errors():
    m = RegressionMetric()
    m.update(torch.tensor([1.5, 2.0]), torch.tensor([1.5, 2.0]))
    assert m.compute() == {"mae": 0.0, "rmse": 0.0}
    with pytest.raises(ValueError, match=r"target must be \[B, 2\] float"):
        RegressionMetric(dims=2).update(torch.zeros(3), torch.zeros(3))
