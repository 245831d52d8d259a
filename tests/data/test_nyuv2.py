"""``nyuv2`` on tiny files written in MTAN's exact ``.npy`` layout."""

import numpy as np
import pytest
import torch

from pymtl.data.base import Dataset
from pymtl.data.nyuv2 import NYUv2
from pymtl.errors import ConfigError, DataFormatError
from pymtl.plugins import get_registry
from pymtl.testing import check_component

H, W = 8, 12


def write_sample(split_dir, i, rng, *, dtype=np.float32):
    """One sample whose depth and normals are functions of its label map."""
    labels = rng.integers(-1, 13, size=(H, W)).astype(dtype)
    valid = labels >= 0
    depth = np.where(valid, labels + 0.5, 0.0)[..., None].astype(dtype)
    normals = rng.normal(size=(H, W, 3))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    normals[~valid] = 0.0
    arrays = {"image": rng.random((H, W, 3)), "label": labels, "depth": depth, "normal": normals}
    for folder, arr in arrays.items():
        (split_dir / folder).mkdir(parents=True, exist_ok=True)
        np.save(split_dir / folder / f"{i}.npy", arr.astype(dtype))
    return arrays


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):  # float64 on disk for val: both dtypes occur in the wild
            dtype = np.float32 if split == "train" else np.float64
            written[split, i] = write_sample(tmp_path / split, i, rng, dtype=dtype)
    return tmp_path, written


def test_values_match_the_files(root):
    path, written = root
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        ds = NYUv2(root=str(path), split=split)
        assert len(ds) == n
        for i in range(n):
            item, arrays = ds[i], written["val" if split == "test" else split, i]
            assert set(item) == {"image", "semseg", "depth", "normals"}
            expected_image = torch.from_numpy(np.moveaxis(arrays["image"], -1, 0)).float()
            torch.testing.assert_close(item["image"], expected_image)
            assert item["semseg"].dtype == torch.int64
            assert torch.equal(item["semseg"], torch.from_numpy(arrays["label"]).long())
            expected_depth = torch.from_numpy(np.moveaxis(arrays["depth"], -1, 0)).float()
            torch.testing.assert_close(item["depth"], expected_depth)
            expected_normals = torch.from_numpy(np.moveaxis(arrays["normal"], -1, 0)).float()
            torch.testing.assert_close(item["normals"], expected_normals)


def test_tasks_ignore_values_and_selection(root):
    path, _ = root
    ds = NYUv2(root=str(path), tasks=("depth",), image_norm="signed")
    assert ds.task_names == ("depth",)
    assert set(ds[0]) == {"image", "depth"}
    assert ds[0]["image"].min() >= -1
    full = NYUv2(root=str(path))
    seg, depth, normals = full.tasks
    assert (seg.num_classes, seg.ignore_index, len(seg.class_names)) == (13, -1, 13)
    assert depth.invalid_value == 0.0
    assert normals.loss_type == "cosine"
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['edges'\]"):
        NYUv2(root=str(path), tasks=("edges",))


def test_augmentation_is_label_consistent_and_reproducible(root):
    path, _ = root
    ds = NYUv2(root=str(path), augment=True, scales=(1.5,), seed=4)
    for i in range(len(ds)):
        item = ds[i]
        valid = item["semseg"] >= 0
        # depth = label + 0.5 on disk; a 1.5× zoom divides it by 1.5 (nearest for both)
        expected = torch.where(valid, (item["semseg"] + 0.5) / 1.5, 0.0)
        torch.testing.assert_close(item["depth"][0], expected)
        norms = item["normals"].norm(dim=0)
        torch.testing.assert_close(norms[norms > 0], torch.ones(int((norms > 0).sum())))
        assert torch.equal(ds[i]["semseg"], item["semseg"])
    first = [ds[i]["semseg"] for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["semseg"], first[i]) for i in range(len(ds)))
    with pytest.raises(ValueError, match=r"epoch must be >= 0 \(got -1\)"):
        ds.set_epoch(-1)


def test_missing_root_says_how_to_set_it(tmp_path):
    with pytest.raises(ConfigError, match=r"set dataset.root .*train,val\}/image/\{i\}.npy"):
        NYUv2()
    with pytest.raises(ConfigError, match="is not a directory"):
        NYUv2(root=str(tmp_path / "nowhere"))


def test_out_of_range_label_names_the_file(root):
    path, _ = root
    bad = np.zeros((H, W), dtype=np.float32)
    bad[2, 3] = 13
    np.save(path / "train" / "label" / "1.npy", bad)
    ds = NYUv2(root=str(path))
    with pytest.raises(DataFormatError, match=r"class ids out of range \(got \[13\].*label/1\.npy"):
        ds[1]


def test_wrong_shape_and_dtype_are_rejected(root):
    path, _ = root
    np.save(path / "train" / "depth" / "0.npy", np.ones((H, W), dtype=np.float32))
    with pytest.raises(
        DataFormatError, match=r"wrong shape \(got \(8, 12\); expected \(8, 12, 1\)"
    ):
        NYUv2(root=str(path))[0]
    np.save(path / "val" / "image" / "0.npy", np.zeros((H, W, 3), dtype=np.uint8))
    with pytest.raises(DataFormatError, match=r"wrong dtype \(got uint8.*val/image/0\.npy"):
        NYUv2(root=str(path), split="val")[0]


def test_non_unit_normals_are_rejected(root):
    path, _ = root
    np.save(path / "train" / "normal" / "0.npy", np.full((H, W, 3), 0.3, dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"not unit vectors.*normal/0\.npy"):
        NYUv2(root=str(path))[0]


def test_missing_and_gapped_files_are_found_on_construction(root):
    path, _ = root
    (path / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(
        DataFormatError, match=r"sample count differs from image/ \(got 2; expected 3"
    ):
        NYUv2(root=str(path))
    (path / "train" / "image" / "1.npy").unlink()
    with pytest.raises(DataFormatError, match=r"not contiguous.*missing \[1\].*train/image"):
        NYUv2(root=str(path))


def test_unreadable_file_names_the_file(root):
    path, _ = root
    (path / "val" / "label" / "1.npy").write_bytes(b"not numpy")
    ds = NYUv2(root=str(path), split="val")
    with pytest.raises(DataFormatError, match=r"not a readable .npy array.*label/1\.npy"):
        ds[1]


def test_component():
    check_component(NYUv2, Dataset)
    assert get_registry(autoload=False).get("dataset", "nyuv2") is NYUv2
