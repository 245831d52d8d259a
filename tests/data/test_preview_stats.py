"""`pymtl data preview` / `stats` on a tiny hand-made dataset with known labels."""

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from pymtl.data.base import Dataset
from pymtl.data.preview import PALETTE, save_preview
from pymtl.data.stats import dataset_stats, format_stats
from pymtl.tasks import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    MultiLabelTask,
    NormalsTask,
    SegmentationTask,
)

H, W = 4, 6


@attrs.frozen(kw_only=True)
class ToyConfig:
    size: int = 3


class Toy(Dataset):
    """Hand-made items with known labels [pymtl]."""

    name = "toy"
    Config = ToyConfig

    def __init__(self, *, size: int = 3) -> None:
        self.size = size

    @property
    def tasks(self):
        return (
            SegmentationTask(name="seg", num_classes=3, class_names=("a", "b", "c")),
            DepthTask(name="depth"),
            NormalsTask(name="normals"),
            EdgeTask(name="edge"),
            ClassificationTask(name="count", num_classes=4),
            MultiLabelTask(name="presence", num_labels=2),
        )

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        seg = torch.zeros(H, W, dtype=torch.int64)
        seg[:, 3:] = 1  # half class a, half class b
        seg[0, 0] = -1  # one ignored pixel
        depth = torch.full((1, H, W), 2.0 + i)
        depth[0, 0, 1] = 0.0  # invalid
        normals = torch.zeros(3, H, W)
        normals[2] = 1.0
        edge = torch.zeros(1, H, W)
        edge[0, :, 3] = 1.0
        return {
            "image": torch.full((3, H, W), 0.5),
            "seg": seg,
            "depth": depth,
            "normals": normals,
            "edge": edge,
            "count": torch.tensor(i % 4),
            "presence": torch.tensor([1.0, float(i % 2)]),
            "depth.mask": torch.tensor(i != 1),  # sample 1 has no depth label
        }


def test_preview_png(tmp_path):
    path = save_preview(Toy(), tmp_path / "p.png", num=2, scale=3)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] >= (1 + 4) * W * 3  # image + 4 dense tasks per row
    # row 0, seg tile (column 1), pixel (1, 4) is class b; tiles start after the header (16 px)
    tile_x = (W + 4) * 3
    assert tuple(image[16 + 1 * 3, tile_x + 4 * 3]) == tuple(PALETTE[1])
    assert tuple(image[16 + 0, tile_x + 0]) == (0, 0, 0)  # the ignored pixel is black


def test_preview_shows_unlabelled_tiles(tmp_path):
    path = save_preview(Toy(), tmp_path / "p.png", num=2, scale=1)
    image = np.asarray(Image.open(path).convert("RGB"))
    row1_y = 16 + H + 14  # header, row 0 strip, row 0 text line
    depth_x = 2 * (W + 4)
    assert tuple(image[row1_y + 1, depth_x + 1]) == (160, 160, 160)


def test_preview_rejects_bad_num(tmp_path):
    with pytest.raises(ValueError, match="num must be >= 1"):
        save_preview(Toy(), tmp_path / "p.png", num=0)


def test_stats_values():
    stats = {s.task.name: s for s in dataset_stats(Toy(), progress=False)}
    seg = stats["seg"]
    assert seg.counts.tolist() == [3 * (H * 3 - 1), 3 * H * 3, 0]
    depth = stats["depth"]
    assert depth.labelled == 2  # sample 1 unlabelled
    assert (depth.minimum, depth.maximum) == (2.0, 4.0)
    assert stats["normals"].total / stats["normals"].valid == pytest.approx(1.0)
    assert stats["edge"].total / stats["edge"].valid == pytest.approx(1 / W)
    assert stats["count"].counts.tolist() == [1, 1, 1, 0]
    report = format_stats(Toy(), list(stats.values()))
    assert "labelled 2/3" in report
    assert "classes a:50.0% b:50.0% c:0.0%" not in report  # ignore pixel shifts a below 50 %
    assert "positive rate 0:100.0% 1:33.3%" in report


def test_stats_rejects_out_of_range_labels():
    class Bad(Toy):
        """Labels past num_classes [pymtl]."""

        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["seg"][1, 1] = 7
            return item

    with pytest.raises(ValueError, match=r"task 'seg' has labels outside \[0, 3\) \(got 0\.\.7\)"):
        dataset_stats(Bad(), progress=False)
