"""The install switches: pure-Python wheel, and the extension loader's three outcomes."""

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pymtl._ext as ext

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_pure_python_wheel(tmp_path):
    env = {**__import__("os").environ, "PYMTL_NO_EXT": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pymtl-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pymtl/ops/gram.py" in names
    assert not [n for n in names if n.endswith(".so")]


def test_missing_extension_is_silent(monkeypatch):
    def no_module(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", no_module)
    module, reason = ext._load()
    assert module is None
    assert reason == "not built (pure-Python install)"


def test_broken_extension_warns(monkeypatch):
    def broken(name):
        raise ImportError("libgomp.so.1: cannot open shared object file")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.warns(RuntimeWarning, match="compiled ops unavailable .*libgomp"):
        module, _ = ext._load()
    assert module is None


def test_disable_switch(monkeypatch):
    monkeypatch.setenv("PYMTL_DISABLE_EXT", "1")
    assert ext._load() == (None, "disabled by PYMTL_DISABLE_EXT")


def test_default_install_has_the_extension():
    import os

    if os.environ.get("PYMTL_NO_EXT") or os.environ.get("PYMTL_DISABLE_EXT"):
        pytest.skip("the extension is switched off in this environment")
    assert ext.extension is not None, ext.status()
    import pymtl._C as C

    assert C.has_openmp
    assert ext.status().startswith("compiled: cpu")
