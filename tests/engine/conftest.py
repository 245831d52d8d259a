import pytest

from pymtl.config import resolve_config
from pymtl.plugins import get_registry
from tests._configs import TINY


@pytest.fixture
def registry():
    return get_registry(autoload=False)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PYMTL_HOME", str(tmp_path / "home"))


@pytest.fixture
def tiny(registry):
    def make(*overrides):
        return resolve_config(TINY, registry, overrides=list(overrides))

    return make
