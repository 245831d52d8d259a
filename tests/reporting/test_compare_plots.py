import numpy as np
import pytest
from PIL import Image

from pymtl.reporting import compare_runs, plot_comparison, profile_taus
from pymtl.reporting.plots import COLORS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, *, colors=()):
    """A real PNG with drawn content, holding each of ``colors``."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    packed = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(packed) > 50
    for color in colors:
        assert int(color[1:], 16) in packed, f"{color} not drawn in {path.name}"


def test_writes_delta_bars_and_profile(scenario, tmp_path):
    paths = plot_comparison(compare_runs(scenario), tmp_path / "cmp")
    assert paths == [
        tmp_path / "cmp" / "compare_delta.png",
        tmp_path / "cmp" / "performance_profile.png",
    ]
    # one colour per method, the same in both plots
    assert_png(paths[0], colors=COLORS[:2])
    assert_png(paths[1], colors=COLORS[:2])


def test_other_variant_and_unknown_variant(scenario, tmp_path):
    cmp = compare_runs(scenario)
    assert_png(plot_comparison(cmp, tmp_path, variant="per_metric")[0])
    with pytest.raises(ValueError, match="unknown Δ_MTL variant 'delta'"):
        plot_comparison(cmp, tmp_path, variant="delta")


def test_without_baselines_or_shared_seeds_still_writes_both(fab, tmp_path):
    runs = [fab.run("a", seed=0), fab.run("b", seed=1, method=("mtan", "ew", None))]
    cmp = compare_runs(runs)
    assert cmp.paired_seeds == ()
    for path in plot_comparison(cmp, tmp_path):
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_profile_taus_hold_every_finite_ratio():
    taus = profile_taus([1.0, 1.25, np.inf, 2.0], points=5)
    assert taus[0] == 1.0
    assert {1.25, 2.0} <= set(taus.tolist())
    assert taus[-1] > 2.0
    assert np.all(np.diff(taus) > 0)
    only_ones = profile_taus([1.0, 1.0, np.inf])
    assert only_ones[0] == 1.0
    assert only_ones[-1] > 1.0
