"""Third-party plugins end to end: the real template installed by pip, and fake installed
distributions (a ``*.dist-info`` folder on ``sys.path``) for every way a plugin can go wrong."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pymtl
from pymtl.errors import PluginError, UnknownComponentError
from pymtl.plugins import ENV_DISABLE_AUTOLOAD, ENV_DISABLED_PLUGINS, get_registry

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "plugins" / "pymtl-template"
# no index, no dependencies, no build isolation: offline, with the venv's flit_core
PIP_OFFLINE = ["--no-deps", "--no-build-isolation", "--no-index", "--no-compile", "--no-cache-dir"]

GOOD_PLUGIN = '''
import attrs
import torch

import pymtl
from pymtl.balancers.base import constant_weights


@attrs.frozen(kw_only=True)
class HalfConfig:
    """No options."""


class Half(pymtl.Balancer):
    """Half weighting: w = s = 1/2, a test fixture [pymtl]."""

    name = "{name}"
    Config = HalfConfig
    needs = pymtl.Needs.LOSSES

    def compute(self, losses, *, gram, jacobian):
        return constant_weights(torch.full((self.num_tasks,), 0.5), losses)


@pymtl.hookimpl
def pymtl_register_balancers():
    return [Half]
'''

BROKEN_PLUGIN = """
import pymtl_test_missing_dependency  # not installed anywhere
"""

NOT_A_COMPONENT = '''
import attrs

import pymtl


@attrs.frozen(kw_only=True)
class NamelessConfig:
    """No options."""


class Nameless(pymtl.Balancer):
    """A balancer without a name [pymtl]."""

    Config = NamelessConfig


@pymtl.hookimpl
def pymtl_register_balancers():
    return [Nameless]
'''

TYPO_PLUGIN = """
import pymtl


@pymtl.hookimpl
def pymtl_register_balancer():  # singular: not a pymtl hook
    return []
"""

_counter = itertools.count()


class FakeDist:
    """What :func:`fake_dist` made: names to look for in the registry and in messages."""

    def __init__(self, site: Path, dist: str, version: str, ep_name: str, module: str) -> None:
        self.site, self.dist, self.version = site, dist, version
        self.ep_name, self.module = ep_name, module


def _write_dist(root: Path, source: str, **names: str) -> FakeDist:
    """A module and a ``*.dist-info`` declaring it as entry point of group ``pymtl``, in a new
    folder of its own (importlib.metadata caches each folder's listing)."""
    n = next(_counter)
    tag = uuid.uuid4().hex[:8]
    fake = FakeDist(
        site=root / f"site{n}",
        dist=names.get("dist", f"pymtl-fake-{tag}"),
        version=names.get("version", "0.0.1"),
        ep_name=names.get("ep_name", f"fake_{tag}"),
        module=f"pymtl_fake_{tag}",
    )
    fake.site.mkdir()
    (fake.site / f"{fake.module}.py").write_text(textwrap.dedent(source))
    info = fake.site / f"{fake.dist.replace('-', '_')}-{fake.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {fake.dist}\nVersion: {fake.version}\n"
    )
    (info / "entry_points.txt").write_text(f"[pymtl]\n{fake.ep_name} = {fake.module}\n")
    return fake


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeDist]]:
    """Install a fake distribution for this process: ``fake_dist(source, dist=, version=,
    ep_name=)``. Its module name is unique and leaves ``sys.modules`` after the test."""
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_DISABLED_PLUGINS, raising=False)
    made: list[FakeDist] = []

    def make(source: str, **names: str) -> FakeDist:
        fake = _write_dist(tmp_path, source, **names)
        monkeypatch.syspath_prepend(str(fake.site))  # also invalidates importlib's caches
        made.append(fake)
        return fake

    yield make
    for fake in made:
        sys.modules.pop(fake.module, None)


def _pymtl_plugins(*args: str, pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pymtl plugins ARGS`` in a fresh interpreter with ``pythonpath`` first."""
    env = {
        k: v for k, v in os.environ.items() if k not in (ENV_DISABLE_AUTOLOAD, ENV_DISABLED_PLUGINS)
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-m", "pymtl", "plugins", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def _by_name(listing: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {(e["kind"], e["name"]): e for e in listing}


# ---------------------------------------------------------------------------------------------
# the real template, installed by pip into a temporary target


def _repo_files() -> list[str]:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", str(TEMPLATE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # caches of the plugin's own test runs are not ours to judge
    return sorted(
        line
        for line in out.splitlines()
        if "/.pytest_cache/" not in line and "/.hypothesis/" not in line
    )


@pytest.mark.slow
def test_template_installs_and_is_listed(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("needs the repository checkout (plugins/pymtl-template)")
    before = _repo_files()
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    install = subprocess.run(
        [*pip, *PIP_OFFLINE, "--target", str(site), str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (site / "pymtl_template" / "__init__.py").is_file()
    assert (site / "pymtl_template-0.1.0.dist-info" / "entry_points.txt").is_file()

    proc = _pymtl_plugins("--format", "json", pythonpath=[site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pymtl-template" not in proc.stderr, proc.stderr
    listed = _by_name(json.loads(proc.stdout))
    gls = listed[("balancer", "gls")]
    assert (gls["distribution"], gls["version"]) == ("pymtl-template", "0.1.0")
    assert gls["summary"].startswith("Geometric loss strategy")
    for name in ("ew", "fixed"):
        assert listed[("balancer", name)]["distribution"] == "pymtl"
        assert listed[("balancer", name)]["version"] == pymtl.__version__

    table = _pymtl_plugins(pythonpath=[site], cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = [line.split(maxsplit=4) for line in table.stdout.splitlines()]
    assert ["balancer", "gls", "pymtl-template", "0.1.0", gls["summary"]] in rows

    assert _repo_files() == before, "installing the template left files in the repository"


# ---------------------------------------------------------------------------------------------
# fake distributions: a broken plugin seen from the command line


def test_broken_plugin_is_reported_and_the_rest_still_load(tmp_path):
    fake = _write_dist(tmp_path, BROKEN_PLUGIN, dist="pymtl-broken", version="2.3.4")
    proc = _pymtl_plugins("--format", "json", pythonpath=[fake.site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = _by_name(json.loads(proc.stdout))
    assert {("balancer", "ew"), ("balancer", "fixed")} <= set(listed)
    missing = "No module named 'pymtl_test_missing_dependency'"
    for part in (fake.ep_name, "pymtl-broken", "2.3.4", "ModuleNotFoundError", missing):
        assert part in proc.stderr, f"{part!r} missing from stderr: {proc.stderr}"


# ---------------------------------------------------------------------------------------------
# fake distributions, in process


def test_good_plugin_is_listed_with_its_distribution(fake_dist):
    fake = fake_dist(GOOD_PLUGIN.format(name="half"), dist="pymtl-half", version="1.2.3")
    registry = get_registry()
    assert registry.failures == ()
    entry = next(e for e in registry.entries("balancer") if e.name == "half")
    assert (entry.plugin, entry.distribution) == (fake.ep_name, "pymtl-half")
    assert entry.version == "1.2.3"
    assert entry.cls.__module__ == fake.module
    assert {"ew", "fixed", "half"} <= set(registry.names("balancer"))


def test_broken_plugin_is_a_failure_and_the_rest_load(fake_dist):
    fake_dist(GOOD_PLUGIN.format(name="half"))
    broken = fake_dist(BROKEN_PLUGIN, dist="pymtl-broken", version="2.3.4")
    registry = get_registry()
    [failure] = [f for f in registry.failures if f.plugin == broken.ep_name]
    assert (failure.distribution, failure.version) == ("pymtl-broken", "2.3.4")
    assert failure.error == ("ModuleNotFoundError: No module named 'pymtl_test_missing_dependency'")
    assert str(failure).startswith(f"plugin {broken.ep_name!r} from pymtl-broken 2.3.4: ")
    assert {"ew", "fixed", "half"} <= set(registry.names("balancer"))


def test_duplicate_of_a_builtin_names_both_providers(fake_dist):
    fake_dist(GOOD_PLUGIN.format(name="ew"), dist="pymtl-clash", version="0.9.0")
    with pytest.raises(PluginError, match="balancer name 'ew' is registered twice") as info:
        get_registry()
    message = str(info.value)
    assert f"pymtl {pymtl.__version__} (pymtl.balancers.ew.EqualWeights)" in message
    assert "pymtl-clash 0.9.0" in message


def test_non_component_is_a_failure_naming_the_problem(fake_dist):
    fake = fake_dist(NOT_A_COMPONENT, dist="pymtl-nameless")
    registry = get_registry()
    [failure] = [f for f in registry.failures if f.plugin == fake.ep_name]
    assert failure.distribution == "pymtl-nameless"
    assert failure.error.startswith("pymtl_register_balancers: TypeError: ")
    assert "Nameless.name must be a lower_snake string (got None)" in failure.error
    assert {"ew", "fixed"} <= set(registry.names("balancer"))


def test_misspelled_hook_is_a_failure_naming_the_typo(fake_dist):
    fake = fake_dist(TYPO_PLUGIN, dist="pymtl-typo")
    registry = get_registry()
    [failure] = [f for f in registry.failures if f.plugin == fake.ep_name]
    assert failure.distribution == "pymtl-typo"
    assert "unknown hook(s) pymtl_register_balancer;" in failure.error
    assert "pymtl_register_balancers" in failure.error  # the known hooks are listed


def test_autoload_can_be_turned_off(fake_dist, monkeypatch):
    fake_dist(GOOD_PLUGIN.format(name="half"))
    fake_dist(BROKEN_PLUGIN)
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    registry = get_registry()
    assert registry.failures == ()
    assert "half" not in registry.names("balancer")
    assert all(e.distribution == "pymtl" for e in registry.entries())
    assert "half" in get_registry(autoload=True).names("balancer")


def test_disabled_plugins_are_blocked_by_entry_point_name(fake_dist, monkeypatch):
    good = fake_dist(GOOD_PLUGIN.format(name="half"))
    broken = fake_dist(BROKEN_PLUGIN)
    monkeypatch.setenv(ENV_DISABLED_PLUGINS, f"{broken.ep_name}, {good.ep_name}")
    registry = get_registry()
    assert "half" not in registry.names("balancer")
    assert not [f for f in registry.failures if f.plugin in (good.ep_name, broken.ep_name)]
    monkeypatch.setenv(ENV_DISABLED_PLUGINS, broken.ep_name)
    assert "half" in get_registry().names("balancer")


def test_unknown_name_suggests_lists_and_mentions_failed_plugins(fake_dist, monkeypatch):
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    with pytest.raises(UnknownComponentError, match="did you mean 'fixed'") as info:
        get_registry().get("balancer", "fixd")
    message = str(info.value)
    assert "unknown balancer 'fixd'" in message
    assert "available: " + ", ".join(get_registry().names("balancer")) in message
    assert "failed to load" not in message

    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD)
    broken = fake_dist(BROKEN_PLUGIN, dist="pymtl-broken", version="2.3.4")
    with pytest.raises(UnknownComponentError, match="did you mean 'fixed'") as info:
        get_registry().get("balancer", "fixd")
    message = str(info.value)
    assert "plugins that failed to load" in message
    assert f"plugin {broken.ep_name!r} from pymtl-broken 2.3.4: ModuleNotFoundError" in message
