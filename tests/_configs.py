"""Run configurations shared by test modules: the tiny synthetic run of the engine tests."""

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
"""Three tasks, 16 × 16 images, 16 training items, a 4-wide convnet: seconds per run."""
