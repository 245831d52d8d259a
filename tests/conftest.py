"""Shared test setup.

* ``device``: a test that takes a ``device`` argument runs once per device: ``cpu`` always,
  plus ``cuda`` when torch sees a GPU. ``PYMTL_TEST_DEVICE=cuda`` (or ``cpu``) runs on that one
  device only, and the run stops at once if it is not available.
* Every test starts from the same state: one intra-op thread for the session (reproducible and
  fair under ``pytest -n``; it also limits the OpenMP threads of our kernels, which share
  torch's libgomp) and ``torch.manual_seed(0)``.
"""

from __future__ import annotations

import os

import pytest
import torch

ENV_TEST_DEVICE = "PYMTL_TEST_DEVICE"


def _device_available(name: str) -> bool:
    try:
        torch.empty(1, device=name)
    except (RuntimeError, AssertionError):  # unknown device type, or torch built without it
        return False
    return True


def devices_under_test() -> list[str]:
    """The devices that ``device``-parametrised tests run on (see the module docstring)."""
    forced = os.environ.get(ENV_TEST_DEVICE, "").strip()
    if forced:
        return [forced]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def pytest_configure(config: pytest.Config) -> None:
    for name in devices_under_test():
        if not _device_available(name):
            raise pytest.UsageError(f"{ENV_TEST_DEVICE}={name}: torch cannot allocate on {name!r}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", devices_under_test())


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
