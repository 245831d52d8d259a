import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import pymtl
from pymtl.cli import main, plugins_listing
from pymtl.plugins import get_registry


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setenv("PYMTL_DISABLE_PLUGIN_AUTOLOAD", "1")
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"pymtl {pymtl.__version__} (torch ")
    assert "ops: " in result.output


def test_plugins_table(run):
    result = run("plugins")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["kind", "name", "distribution", "version", "description"]
    assert any(line.split()[:4] == ["balancer", "ew", "pymtl", pymtl.__version__] for line in lines)


def test_plugins_json(run):
    result = run("plugins", "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert all(set(row) == {"kind", "name", "distribution", "version", "summary"} for row in rows)
    fixed = next(r for r in rows if r["name"] == "fixed")
    assert fixed["kind"] == "balancer"
    assert fixed["distribution"] == "pymtl"
    assert fixed["summary"].startswith("Fixed weighting")


def test_plugins_kind_filter(run):
    rows = json.loads(run("plugins", "--format", "json", "--kind", "dataset").output)
    assert all(r["kind"] == "dataset" for r in rows)


def test_config_prints_resolved_toml(run, tmp_path):
    result = run(
        "config", "--balancer", "fixed", "--set", "balancer.weights.edge=50", "--seed", "7"
    )
    assert result.exit_code == 0
    path = tmp_path / "run.toml"
    path.write_text(result.output)
    again = run("config", "--config", str(path))
    assert again.output == result.output
    assert 'name = "fixed"' in result.output
    assert "seed = 7" in result.output


def test_config_error_is_one_message(run):
    result = CliRunner().invoke(main, ["config", "--balancer", "fxed"])
    assert result.exit_code == 2
    assert "error: invalid configuration" in result.output
    assert "unknown balancer 'fxed'; did you mean 'fixed'?" in result.output
    assert "Traceback" not in result.output


def test_readme_component_table_is_current():
    """The README's component table is `pymtl plugins --format markdown` of the built-ins."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start, end = "<!-- components:start -->\n", "<!-- components:end -->"
    table = readme[readme.index(start) + len(start) : readme.index(end)].strip()
    assert table == plugins_listing(get_registry(autoload=False), "markdown"), (
        "README component table is stale: regenerate it with "
        "`PYMTL_DISABLE_PLUGIN_AUTOLOAD=1 pymtl plugins --format markdown`"
    )


@pytest.mark.parametrize("argv", [["-m", "pymtl"], ["-m", "pymtl.cli"]])
def test_module_entry_points(argv):
    out = subprocess.run(
        [sys.executable, *argv, "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("pymtl ")


def test_console_script():
    script = __import__("shutil").which(
        "pymtl", path=str(__import__("pathlib").Path(sys.executable).parent)
    )
    assert script, "the pymtl console script is not installed next to the interpreter"
    out = subprocess.run(
        [script, "plugins", "--format", "json"], capture_output=True, text=True, check=True
    )
    assert any(r["name"] == "ew" for r in json.loads(out.stdout))


def test_config_defaults_print(run):
    result = run("config")
    assert result.exit_code == 0
    assert '[balancer]\nname = "ew"' in result.output


def test_print_config_flag(run):
    plain = run("config", "--balancer", "fixed")
    flagged = run("config", "--balancer", "fixed", "--print-config")
    assert flagged.exit_code == 0
    assert flagged.output == plain.output


def test_data_preview_and_stats_on_synthetic(run, tmp_path):
    out = tmp_path / "preview.png"
    result = run("data", "preview", "synthetic", "--preset", "smoke", "-n", "2", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tasks: semseg, depth, normals, count" in result.output
    stats = run("data", "stats", "synthetic", "--preset", "smoke", "--limit", "4")
    assert stats.exit_code == 0
    assert "semseg (segmentation, 5 ch, primary miou): valid 100.0%; classes floor:" in stats.output


def test_data_errors(run):
    result = CliRunner().invoke(main, ["data", "stats", "synthetic", "--preset", "tiny"])
    assert result.exit_code == 2
    assert "dataset 'synthetic' has no preset 'tiny' (available: " in result.output
    result = CliRunner().invoke(main, ["data", "stats", "nyuv2"])
    assert result.exit_code == 2
    assert "dataset.root" in result.output
