"""``cityscapes`` on tiny files written in MTAN's exact ``.npy`` layout."""

import numpy as np
import pytest
import torch

from pymtl.data.base import Dataset
from pymtl.data.cityscapes import Cityscapes
from pymtl.errors import ConfigError, DataFormatError
from pymtl.testing import check_component

H, W = 8, 12


def write_split(split_dir, n, rng, *, label_dirs=("label_7", "label_19")):
    """n samples; inverse depth = (label_7 + 1) / 100 where labelled, 0 elsewhere."""
    written = []
    for i in range(n):
        label7 = rng.integers(-1, 7, size=(H, W)).astype(np.float32)
        arrays = {
            "image": rng.random((H, W, 3)).astype(np.float32),
            "label_7": label7,
            "label": label7,
            "label_19": rng.integers(-1, 19, size=(H, W)).astype(np.float32),
            "depth": np.where(label7 >= 0, (label7 + 1) / 100, 0.0)[..., None].astype(np.float32),
        }
        for folder in ("image", "depth", *label_dirs):
            (split_dir / folder).mkdir(parents=True, exist_ok=True)
            np.save(split_dir / folder / f"{i}.npy", arrays[folder])
        written.append(arrays)
    return written


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(1)
    return tmp_path, {s: write_split(tmp_path / s, n, rng) for s, n in (("train", 3), ("val", 2))}


@pytest.mark.parametrize(("num_classes", "folder"), [(7, "label_7"), (19, "label_19")])
def test_values_match_the_files(root, num_classes, folder):
    path, written = root
    ds = Cityscapes(root=str(path), split="val", num_classes=num_classes)
    assert len(ds) == 2
    assert ds.tasks[0].num_classes == num_classes
    assert ds.tasks[0].ignore_index == -1
    for i, arrays in enumerate(written["val"]):
        item = ds[i]
        assert torch.equal(item["semseg"], torch.from_numpy(arrays[folder]).long())
        torch.testing.assert_close(item["depth"][0], torch.from_numpy(arrays["depth"][..., 0]))
        torch.testing.assert_close(
            item["image"], torch.from_numpy(arrays["image"]).permute(2, 0, 1)
        )


def test_libmtl_label_folder_is_the_fallback(tmp_path):
    write_split(tmp_path / "train", 2, np.random.default_rng(2), label_dirs=("label",))
    ds = Cityscapes(root=str(tmp_path))
    assert ds.folders["semseg"] == "label"
    assert ds[1]["semseg"].shape == (H, W)
    with pytest.raises(DataFormatError, match=r"folder is missing.*train/label_19"):
        Cityscapes(root=str(tmp_path), num_classes=19)
    assert Cityscapes(root=str(tmp_path), label_dir="label").folders["semseg"] == "label"


def test_inverse_depth_is_multiplied_by_the_zoom(root):
    path, _ = root
    ds = Cityscapes(root=str(path), augment=True, scales=(1.2,), seed=1)
    for i in range(len(ds)):
        item = ds[i]
        labels = item["semseg"]
        expected = torch.where(labels >= 0, (labels + 1) / 100 * 1.2, 0.0)
        torch.testing.assert_close(item["depth"][0], expected)


def test_19_class_ids_are_rejected_as_7_class_labels(root):
    path, _ = root
    ds = Cityscapes(root=str(path), label_dir="label_19")
    with pytest.raises(DataFormatError, match=r"class ids out of range.*\[0, 7\).*label_19/0\.npy"):
        ds[0]


def test_negative_inverse_depth_is_rejected(root):
    path, _ = root
    np.save(path / "val" / "depth" / "1.npy", np.full((H, W, 1), -0.1, dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"values out of range.*val/depth/1\.npy"):
        Cityscapes(root=str(path), split="val")[1]


def test_bad_options(root):
    path, _ = root
    with pytest.raises(ValueError, match="'num_classes' must be in"):
        Cityscapes(root=str(path), num_classes=8)
    with pytest.raises(ConfigError, match=r"set dataset\.root"):
        Cityscapes(root="")


def test_component():
    check_component(Cityscapes, Dataset)
