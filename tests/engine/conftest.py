import pytest

from pymtl.config import resolve_config
from pymtl.plugins import get_registry


@pytest.fixture
def registry():
    return get_registry(autoload=False)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "home"))


TINY = {
    "seed": 0,
    "dataset": {
        "name": "synthetic",
        "image_size": 16,
        "train_size": 16,
        "val_size": 8,
        "test_size": 8,
        "tasks": ["semseg", "depth", "count"],
        "hflip": False,
    },
    "arch": {"name": "hps", "head_channels": 4, "backbone": {"name": "convnet", "width": 4}},
    "balancer": {"name": "ew"},
    "train": {"epochs": 2, "batch_size": 4, "lr": 0.01},
}


@pytest.fixture
def tiny(registry):
    def make(*overrides):
        return resolve_config(TINY, registry, overrides=list(overrides))

    return make
