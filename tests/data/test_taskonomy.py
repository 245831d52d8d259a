import math

import numpy as np
import pytest
import torch
from PIL import Image

import pymtl
from pymtl.data.taskonomy import STANDLEY_TASKS, Taskonomy
from pymtl.errors import ConfigError
from pymtl.tasks import DepthTask, NormalsTask, SegmentationTask
from pymtl.tasks.dense_regression import DenseRegressionTask
from pymtl.testing import check_component

# 4x4 raw depth (1/512 m): valid iff < 2**13
DEPTH = np.array(
    [[512, 1024, 8191, 8192], [65535, 0, 1500, 2048], [512, 512, 512, 512], [9000, 256, 128, 64]],
    dtype=np.uint16,
)
VALID = DEPTH < 2**13
SEG = np.arange(16, dtype=np.uint8).reshape(4, 4) % 18
KEYPOINTS = (np.arange(16, dtype=np.uint16) * 1000).reshape(4, 4)
EDGES = (np.arange(16, dtype=np.uint16) * 4000 + 7).reshape(4, 4)
NORMAL = np.zeros((4, 4, 3), dtype=np.uint8)
NORMAL[...] = (127, 127, 255)  # +z
NORMAL[0, 0] = (255, 127, 127)  # +x
NORMAL[0, 1] = (127, 0, 127)  # -y


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _view(root, parts, stem, skip=(), **override):
    arrays = {
        "rgb": np.full((4, 4, 3), 51, dtype=np.uint8),
        "segment_semantic": SEG,
        "depth_zbuffer": DEPTH,
        "normal": NORMAL,
        "keypoints2d": KEYPOINTS,
        "edge_texture": EDGES,
        "edge_occlusion": EDGES,
    }
    arrays.update(override)
    for domain, array in arrays.items():
        if domain not in skip:
            _png(root.joinpath(domain, *parts, f"{stem}_domain_{domain}.png"), array)


@pytest.fixture
def flat(tmp_path):
    _view(tmp_path, (), "point_0_view_0")
    _view(tmp_path, (), "point_1_view_2")
    return tmp_path


def _flat(root, **kw):
    kw = {"split": "all", "size": 4, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)} | kw
    return Taskonomy(root=str(root), **kw)


def test_conformance():
    check_component(Taskonomy, pymtl.Dataset)


def test_flat_layout_metric_targets(flat):
    ds = _flat(flat, tasks=(*STANDLEY_TASKS, "edge_texture"))
    assert ds.layout == "flat"
    assert len(ds) == 2
    item = ds[0]
    assert torch.allclose(item["image"], torch.full((3, 4, 4), 51 / 255))
    assert torch.equal(item["segment_semantic"], torch.from_numpy(SEG).long())
    expect_depth = np.where(VALID, DEPTH / 512.0, 0.0)
    assert torch.equal(item["depth_zbuffer"][0], torch.from_numpy(expect_depth).float())
    assert item["depth_zbuffer"][0, 0, 2] == 8191 / 512  # just below 16 m: valid
    assert torch.equal(item["keypoints2d"][0], torch.from_numpy(KEYPOINTS / 65535.0).float())
    assert torch.equal(item["edge_texture"][0], torch.from_numpy(EDGES / 65535.0).float())
    occl = item["edge_occlusion"][0]
    assert torch.isnan(occl[~torch.from_numpy(VALID)]).all()
    assert torch.equal(
        occl[torch.from_numpy(VALID)], torch.from_numpy(EDGES[VALID] / 65535.0).float()
    )


def test_normals_decoded_unit_and_masked(flat):
    n = _flat(flat, tasks=("normal",))[0]["normal"]
    assert n.shape == (3, 4, 4)
    v = NORMAL.astype(np.float64) / 255 * 2 - 1
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    v[~VALID] = 0.0
    assert torch.allclose(n, torch.from_numpy(v).permute(2, 0, 1).float(), atol=1e-6)
    assert n[:, 0, 0].tolist() == pytest.approx([1.0, -0.0039, -0.0039], abs=1e-4)
    assert n[1, 0, 1] == pytest.approx(-1.0, abs=1e-4)
    assert (n[:, 0, 3] == 0).all()  # depth 8192: invalid


def test_standley_targets(flat):
    item = _flat(flat, targets="standley", tasks=(*STANDLEY_TASKS, "edge_texture"))[0]
    d = item["depth_zbuffer"][0]
    assert torch.isnan(d[~torch.from_numpy(VALID)]).all()
    assert d[1, 2] == 0.0  # raw 1500
    assert d[0, 0] == pytest.approx((512 - 1500) / 1000)
    assert torch.allclose(
        item["keypoints2d"][0], torch.from_numpy((KEYPOINTS - 50.0) / 100).float()
    )
    assert torch.allclose(item["edge_texture"][0], torch.from_numpy((EDGES - 718.0) / 1070).float())
    assert item["edge_occlusion"][0, 0, 0] == pytest.approx((7 - 56.0248) / 239.1265)


def test_task_declarations(flat):
    ds = _flat(flat, tasks=(*STANDLEY_TASKS, "edge_texture"))
    seg, depth, normal, kp, eo, et = ds.tasks
    assert isinstance(seg, SegmentationTask)
    assert (seg.num_classes, seg.ignore_index, seg.class_names[1]) == (18, 0, "background")
    assert isinstance(depth, DepthTask)
    assert depth.invalid_value == 0.0
    assert isinstance(normal, NormalsTask)
    assert all(isinstance(t, DenseRegressionTask) for t in (kp, eo, et))
    assert ds.task_names == (*STANDLEY_TASKS, "edge_texture")
    standley = _flat(flat, targets="standley")
    assert isinstance(standley.tasks[1], DenseRegressionTask)


def test_losses_are_finite_on_a_batch(flat):
    ds = _flat(flat, targets="standley", tasks=(*STANDLEY_TASKS, "edge_texture"))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 4, 4)
    for task in ds.tasks:
        pred = torch.zeros(2, task.channels, 4, 4)
        assert math.isfinite(task.loss(pred, batch[task.name]))


def test_resize_is_nearest_for_labels_and_depth(flat):
    item = _flat(flat, size=2)[0]
    # nearest with pixel centres: output (i, j) <- input (2i + 1, 2j + 1)
    assert torch.equal(item["segment_semantic"], torch.from_numpy(SEG[1::2, 1::2]).long())
    expect = np.where(VALID, DEPTH / 512.0, 0.0)[1::2, 1::2]
    assert torch.equal(item["depth_zbuffer"][0], torch.from_numpy(expect).float())
    assert item["normal"].shape == (3, 2, 2)
    norms = item["normal"].norm(dim=0)
    assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-6)


def test_nested_layout_with_split_csv_and_list(tmp_path):
    for building in ("alpha", "beta", "gamma"):
        _view(tmp_path, ("taskonomy", building), "point_0_view_0")
    csv = tmp_path / "train_val_test_tiny.csv"
    csv.write_text("id,train,val,test\nalpha,1,0,0\nbeta,1,0,0\ngamma,0,1,0\n")
    train = Taskonomy(root=str(tmp_path), split_file=str(csv), size=4)
    assert train.layout == "nested"
    assert [train.path(i, "rgb").parent.name for i in range(len(train))] == ["alpha", "beta"]
    val = Taskonomy(root=str(tmp_path), split="val", split_file=str(csv), size=4)
    assert val.path(0, "normal") == tmp_path.joinpath(
        "normal", "taskonomy", "gamma", "point_0_view_0_domain_normal.png"
    )
    listed = tmp_path / "val_models.txt"
    listed.write_text("beta\n\ngamma\n")
    assert len(Taskonomy(root=str(tmp_path), split="val", split_file=str(listed), size=4)) == 2
    assert len(Taskonomy(root=str(tmp_path), buildings=("alpha",), size=4)) == 1
    assert len(Taskonomy(root=str(tmp_path), split="all", size=4)) == 3


def test_split_selection_errors(tmp_path, flat):
    with pytest.raises(ConfigError, match="flat layout of one building"):
        Taskonomy(root=str(flat))
    nested = tmp_path / "nested"
    _view(nested, ("taskonomy", "alpha"), "point_0_view_0")
    with pytest.raises(ConfigError, match=r"needs dataset\.split_file"):
        Taskonomy(root=str(nested))
    with pytest.raises(FileNotFoundError, match=r"not under .*: zeta"):
        Taskonomy(root=str(nested), buildings=("alpha", "zeta"))
    assert len(Taskonomy(root=str(nested), buildings=("alpha", "zeta"), skip_incomplete=True)) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("alpha,1,0,0\nbeta,1,0\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: expected 'building,train,val,test'"):
        Taskonomy(root=str(nested), split_file=str(bad))


def test_root_not_set_or_wrong():
    with pytest.raises(ConfigError, match=r"dataset.root is not set.*domain_rgb.png"):
        Taskonomy()
    with pytest.raises(FileNotFoundError, match=r"nowhere/rgb is not a folder"):
        Taskonomy(root="/nowhere", split="all")


def test_missing_label_file(tmp_path):
    _view(tmp_path, (), "point_0_view_0")
    _view(tmp_path, (), "point_0_view_1", skip=("keypoints2d",))
    with pytest.raises(
        FileNotFoundError, match=r"1 of 2 views .*point_0_view_1_domain_keypoints2d"
    ):
        _flat(tmp_path)
    assert _flat(tmp_path, skip_incomplete=True).skipped == 1
    assert len(_flat(tmp_path, tasks=("normal",))) == 2  # keypoints not needed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"depth_zbuffer": DEPTH.astype(np.uint8)}, r"depth_zbuffer must be a PNG of mode I;16"),
        ({"segment_semantic": SEG + 10}, r"segment_semantic.*labels must be in 0..17, got 25"),
        ({"keypoints2d": KEYPOINTS[:2]}, r"keypoints2d is 4x2, expected the RGB's 4x4"),
        ({"normal": np.zeros((4, 4, 3), np.uint8)}, r"normals have median length 1.732"),
        ({"rgb": np.zeros((4, 4), np.uint8)}, r"rgb must be a PNG of mode RGB, got L"),
    ],
)
def test_malformed_first_sample(tmp_path, override, message):
    _view(tmp_path, (), "point_0_view_0", **override)
    ds = _flat(tmp_path, tasks=(*STANDLEY_TASKS, "edge_texture"))
    with pytest.raises(ValueError, match=message) as info:
        ds[0]
    assert "point_0_view_0_domain_" in str(info.value)


def test_unreadable_and_misnamed_files(tmp_path):
    _view(tmp_path, (), "point_0_view_0")
    (tmp_path / "normal" / "point_0_view_0_domain_normal.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read normal image .*domain_normal.png"):
        _flat(tmp_path)[0]
    _png(tmp_path / "rgb" / "stray.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"stray.png: RGB file names must end in"):
        _flat(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match=r"tasks must be distinct names"):
        Taskonomy.Config(tasks=("depth",))
    with pytest.raises(ValueError, match=r"'split' must be in"):
        Taskonomy.Config(split="training")
