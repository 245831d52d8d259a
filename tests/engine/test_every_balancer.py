"""Every registered balancer trains: two steps of a tiny hps model through TrainStep."""

import pytest
import torch

from pymtl.config import resolve_config
from pymtl.engine import build
from pymtl.engine.step import TrainStep, zero_grad
from pymtl.plugins import get_registry

REGISTRY = get_registry(autoload=False)
DOC = {
    "dataset": {
        "name": "synthetic",
        "image_size": 16,
        "train_size": 8,
        "tasks": ["semseg", "depth", "count"],
        "hflip": False,
    },
    "arch": {"name": "hps", "head_channels": 4, "backbone": {"name": "convnet", "width": 4}},
}


@pytest.fixture(scope="module")
def dataset():
    config = resolve_config(DOC, REGISTRY)
    return build.build_dataset(config, REGISTRY, "train")


@pytest.mark.parametrize("name", REGISTRY.names("balancer"))
def test_two_training_steps(name, dataset):
    config = resolve_config({**DOC, "balancer": {"name": name}}, REGISTRY)
    torch.manual_seed(0)
    model = build.build_model(config, REGISTRY, dataset)
    balancer = build.build_balancer(config, REGISTRY, dataset)
    optimizer, _ = build.build_optimizer(config, model, balancer, total_steps=2)
    step = TrainStep(model, dataset.tasks, balancer)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    for _ in range(2):
        zero_grad(model)
        zero_grad(balancer)
        result = step(batch)
        assert torch.isfinite(result.weights.shared).all(), name
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() for g in grads), name
        optimizer.step()
    balancer.on_epoch_end(1)
