"""``nyud`` on tiny files written in MTL-PyTorch's exact NYUD_MT layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from pymtl.data.base import Dataset
from pymtl.data.nyud_mt import NYUD
from pymtl.data.transforms import normalize_image
from pymtl.errors import DataFormatError
from pymtl.testing import check_component

H, W = 8, 12
SPLITS = {"train": ["0003", "0010", "0042"], "val": ["0005", "0007"]}


def write_sample(root, sid, rng, *, flat_depth):
    raw = rng.integers(0, 41, size=(H, W)).astype(np.uint8)  # 0 = void
    raw[0, :3] = [0, 1, 40]
    depth = np.where(raw > 0, raw * 0.1, 0.0).astype(np.float32)
    normals = rng.normal(size=(H, W, 3))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    normals[raw == 0] = 0
    edges = (rng.random((H, W)) > 0.7).astype(np.uint8 if flat_depth else np.float32)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
        root / "images" / f"{sid}.jpg", quality=95
    )
    Image.fromarray(raw).save(root / "segmentation" / f"{sid}.png")
    np.save(root / "depth" / f"{sid}.npy", depth if flat_depth else depth[..., None])
    np.save(root / "normals" / f"{sid}.npy", normals.astype(np.float32))
    np.save(root / "edge" / f"{sid}.npy", edges)
    return {"raw": raw, "depth": depth, "normals": normals, "edges": edges}


@pytest.fixture
def root(tmp_path):
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (tmp_path / folder).mkdir()
    rng = np.random.default_rng(3)
    written = {}
    for split, ids in SPLITS.items():
        (tmp_path / "gt_sets" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for k, sid in enumerate(ids):
            written[sid] = write_sample(tmp_path, sid, rng, flat_depth=k % 2 == 0)
    return tmp_path, written


def test_values_match_the_files(root):
    path, written = root
    ds = NYUD(root=str(path), split="train")
    assert len(ds) == 3
    for i, sid in enumerate(SPLITS["train"]):
        item, arrays = ds[i], written[sid]
        decoded = np.asarray(Image.open(path / "images" / f"{sid}.jpg").convert("RGB")) / 255
        image = torch.from_numpy(decoded).permute(2, 0, 1).float()
        torch.testing.assert_close(item["image"], normalize_image(image, "imagenet"))
        expected = np.where(arrays["raw"] == 0, 255, arrays["raw"].astype(np.int64) - 1)
        assert torch.equal(item["semseg"], torch.from_numpy(expected))
        assert item["semseg"][0, :3].tolist() == [255, 0, 39]
        torch.testing.assert_close(item["depth"][0], torch.from_numpy(arrays["depth"]))
        torch.testing.assert_close(
            item["normals"], torch.from_numpy(arrays["normals"]).permute(2, 0, 1).float()
        )
        torch.testing.assert_close(item["edges"][0], torch.from_numpy(arrays["edges"]).float())


def test_tasks_declare_the_file_conventions(root):
    path, _ = root
    seg, depth, normals, edges = NYUD(root=str(path)).tasks
    assert (seg.num_classes, seg.ignore_index, len(seg.class_names)) == (40, 255, 40)
    assert depth.invalid_value == 0.0
    assert normals.loss_type == "l1"
    assert (edges.tolerance, edges.pos_weight) == (0.011, 0.95)


def test_resize_and_augment_keep_targets_consistent(root):
    path, _ = root
    ds = NYUD(
        root=str(path), split="val", size=(16, 24), augment=True, scales=(1.25,), image_norm="none"
    )
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 16, 24)
        labelled = item["semseg"] != 255
        # depth = 0.1 · raw id = 0.1 · (class + 1); the zoom divides it by 1.25
        expected = torch.where(labelled, (item["semseg"] + 1) * 0.1 / 1.25, 0.0)
        torch.testing.assert_close(item["depth"][0], expected)
        assert set(item["edges"].unique().tolist()) <= {0.0, 1.0}


def test_void_above_40_is_rejected(root):
    path, _ = root
    Image.fromarray(np.full((H, W), 41, dtype=np.uint8)).save(path / "segmentation" / "0005.png")
    with pytest.raises(DataFormatError, match=r"class ids out of range \(got \[41\].*0005\.png"):
        NYUD(root=str(path), split="val")[0]


def test_non_binary_edges_are_rejected(root):
    path, _ = root
    np.save(path / "edge" / "0003.npy", np.full((H, W), 2.0, dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"not a binary map \(got \[2\.0\].*edge/0003\.npy"):
        NYUD(root=str(path))[0]


def test_wrong_normals_shape_is_rejected(root):
    path, _ = root
    np.save(path / "normals" / "0010.npy", np.zeros((H, W), dtype=np.float32))
    with pytest.raises(
        DataFormatError, match=r"wrong shape \(got \(8, 12\); expected \(8, 12, 3\)"
    ):
        NYUD(root=str(path))[1]


def test_missing_files_are_found_on_construction(root):
    path, _ = root
    (path / "depth" / "0042.npy").unlink()
    with pytest.raises(DataFormatError, match=r"NYUD depth files: 1 file\(s\) missing.*0042\.npy"):
        NYUD(root=str(path))
    assert len(NYUD(root=str(path), tasks=("semseg",))) == 3  # depth not needed
    (path / "gt_sets" / "val.txt").unlink()
    with pytest.raises(DataFormatError, match=r"split list file is missing.*gt_sets/val\.txt"):
        NYUD(root=str(path), split="val")


def test_component():
    check_component(NYUD, Dataset)
