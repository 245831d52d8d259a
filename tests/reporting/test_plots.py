import math

import numpy as np
import pytest
from PIL import Image

from pymtl.reporting import RunFormatError, load_run, plot_run
from pymtl.reporting.plots import COLORS, _log_scale, _task_panel, new_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, size=None, *, colors=()):
    """A real PNG (of ``size`` pixels) with drawn content, holding each of ``colors``."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert size is None or image.size == size
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    packed = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(packed) > 50  # text, lines, antialiasing: not blank
    for color in colors:
        assert int(color[1:], 16) in packed, f"{color} not drawn in {path.name}"


def test_writes_the_three_plots(fab):
    run = fab.run("r")
    paths = plot_run(run)
    assert paths == [run / "plots" / n for n in ("loss.png", "weights.png", "metrics.png")]
    assert_png(paths[0], (770, 495), colors=COLORS[:2])  # 7 × 4.5 in at 110 dpi
    assert_png(paths[1], (770, 495), colors=COLORS[:2])
    assert_png(paths[2], (1144, 484), colors=COLORS[:2])  # two tasks side by side


def test_single_epoch_and_other_out_dir(fab, tmp_path):
    run = fab.run("r", history=[fab.record(0)])
    paths = plot_run(load_run(run), out_dir=tmp_path / "elsewhere")
    assert [p.parent for p in paths] == [tmp_path / "elsewhere"] * 3
    for path in paths:
        assert_png(path, colors=COLORS[:1])


def test_run_still_training_and_without_weights(fab):
    records = [fab.record(e, split=s) for e in range(2) for s in ("val", "test")]
    for record in records:
        record["train"]["weights"] = {"semseg": None, "depth": None}
    paths = plot_run(fab.run("r", history=records, summary=False))
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_empty_history_is_refused(fab):
    with pytest.raises(ValueError, match=r"metrics\.jsonl has no records"):
        plot_run(fab.run("r", history=[]))


def test_missing_run_is_refused(tmp_path):
    with pytest.raises(RunFormatError, match="does not exist"):
        plot_run(tmp_path / "nope")


@pytest.mark.parametrize(
    ("values", "log"),
    [([0.5, 2.0], False), ([0.01, 1.0], False), ([0.009, 1.0], True), ([0.0, 1e6], False)],
)
def test_log_scale_beyond_two_decades(values, log):
    assert _log_scale(values) is log


def test_metric_panel_marks_primary_direction_and_scale(fab):
    record = fab.record(0)
    record["metrics"]["normals"] = {"mean": 30.0, "within_30": 0.5}
    later = fab.record(1)
    later["metrics"]["normals"] = {"mean": 25.0, "within_30": math.nan}
    tasks = {"normals": {"primary": "mean", "higher_is_better": {"mean": False, "within_30": True}}}
    run = load_run(fab.run("r", history=[record, later], tasks=tasks))
    ax = new_figure(5, 4).add_subplot()
    _task_panel(ax, run, task="normals", splits=["val"])
    assert ax.get_title() == "normals: primary mean ↓"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["mean ↓ (primary)", "within_30 ↑ (right axis)"]
    primary_line = ax.get_lines()[0]
    assert primary_line.get_linewidth() > 2
    assert primary_line.get_xdata().tolist() == [0, 1]
    twin = next(a for a in ax.figure.axes if a is not ax)
    assert twin.get_lines()[0].get_label() == "within_30 ↑ (right axis)"
