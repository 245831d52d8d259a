import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import pymtl
from pymtl.data.decathlon import DOMAIN_STATS, SVHNOmniglot
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask
from pymtl.testing import check_component

SVHN_MEAN, SVHN_STD = (torch.tensor(v).view(3, 1, 1) for v in DOMAIN_STATS["svhn"])
# a 4-wide, 8-tall grey image whose rows are 0, 30, ..., 210
TALL = np.repeat(np.arange(8, dtype=np.uint8)[:, None] * 30, 4, axis=1)


def _omniglot_norm(v):
    return (v / 255 - 0.0810) / 0.2705


def _save(path, array_or_image):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array_or_image
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img.save(path)


def _decathlon(root, svhn_classes=10):
    data = root / "decathlon-1.0-data"
    for split, n in (("train", 2), ("val", 1)):
        for c in range(svhn_classes):
            for k in range(n):
                rgb = np.full((6, 8, 3), (20 * c, 7 * k, 100), dtype=np.uint8)
                _save(data / "svhn" / split / f"{c + 1:02d}" / f"{k}.png", rgb)
    for name in ("a", "b", "c"):
        _save(data / "omniglot" / "train" / name / "0.png", TALL)
    _save(data / "omniglot" / "val" / "b" / "0.png", TALL)
    return data


def test_conformance():
    check_component(SVHNOmniglot, pymtl.Dataset)


def test_decathlon_items_and_masks(tmp_path):
    _decathlon(tmp_path)
    ds = SVHNOmniglot(root=str(tmp_path), size=4)
    assert ds.format == "decathlon"
    assert len(ds) == 20 + 3
    assert ds.domain_indices("svhn") == range(20)
    assert ds.domain_indices("omniglot") == range(20, 23)
    assert [type(t) for t in ds.tasks] == [ClassificationTask] * 2
    assert [t.num_classes for t in ds.tasks] == [10, 3]
    item = ds[5]  # class folder "03", image 1
    assert item["image"].shape == (3, 4, 4)
    expect = (torch.tensor([40.0, 7.0, 100.0]).view(3, 1, 1) / 255 - SVHN_MEAN) / SVHN_STD
    assert torch.allclose(item["image"], expect.expand(3, 4, 4), atol=1e-5)
    assert (int(item["svhn"]), int(item["omniglot"])) == (2, -1)
    assert (bool(item["svhn.mask"]), bool(item["omniglot.mask"])) == (True, False)
    omni = ds[21]
    assert (int(omni["svhn"]), int(omni["omniglot"])) == (-1, 1)
    assert (bool(omni["svhn.mask"]), bool(omni["omniglot.mask"])) == (False, True)
    # Resize(4) leaves the 4-wide image alone; CenterCrop(4) keeps rows 2..5, on 3 channels
    rows = torch.tensor(_omniglot_norm(TALL[2:6, 0].astype(np.float64)), dtype=torch.float32)
    assert torch.allclose(omni["image"], rows.view(1, 4, 1).expand(3, 4, 4), atol=1e-6)
    with pytest.raises(IndexError, match="index 23 out of range"):
        ds[23]


def test_val_split_keeps_train_class_indices(tmp_path):
    _decathlon(tmp_path)
    val = SVHNOmniglot(root=str(tmp_path / "decathlon-1.0-data"), split="val", size=4)
    assert len(val) == 10 + 1
    assert int(val[10]["omniglot"]) == 1  # folder "b" is the 2nd of train's a, b, c
    assert val.tasks[1].num_classes == 3


def test_mixed_batch_losses_use_masks(tmp_path):
    _decathlon(tmp_path)
    ds = SVHNOmniglot(root=str(tmp_path), size=4)
    batch = torch.utils.data.default_collate([ds[0], ds[21]])
    assert batch["image"].shape == (2, 3, 4, 4)
    assert batch["svhn.mask"].tolist() == [True, False]
    svhn, omniglot = ds.tasks
    logits = torch.zeros(2, 10)
    logits[0, 0] = 5.0  # right for the SVHN sample, and the Omniglot sample must not count
    loss = svhn.loss(logits, batch["svhn"], labelled=batch["svhn.mask"])
    assert loss.item() == pytest.approx(-torch.log_softmax(logits[0], 0)[0].item())
    assert omniglot.loss(torch.zeros(2, 3), batch["omniglot"], batch["omniglot.mask"]) > 0


def _torchvision(root, n_drawings=5):
    x = np.zeros((32, 32, 3, 5), dtype=np.uint8)
    for i in range(5):
        x[..., i] = (10 * i, 50, 90)
    scipy.io.savemat(root / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [10]])})
    scipy.io.savemat(root / "test_32x32.mat", {"X": x[..., :2], "y": np.array([[5], [10]])})
    stroke = np.ones((6, 6), dtype=bool)
    stroke[:, 2] = False  # a black vertical stroke on white
    for where in ("images_background/Alpha/character01", "images_evaluation/Beta/character01"):
        for k in range(n_drawings):
            _save(root / "omniglot-py" / where / f"0001_{k + 1:02d}.png", Image.fromarray(stroke))


def test_torchvision_formats(tmp_path):
    _torchvision(tmp_path)
    train = SVHNOmniglot(root=str(tmp_path), size=6)
    assert train.format == "torchvision"
    assert [t.num_classes for t in train.tasks] == [10, 2]
    assert train.domain_indices("svhn") == range(4)  # the last 1 of 5 is val
    assert [int(train[i]["svhn"]) for i in range(4)] == [0, 1, 2, 3]  # 10 -> 0
    assert len(train.domain_indices("omniglot")) == 2 * 3  # 5 drawings: 3 train, 1 val, 1 test
    img = train[2]["image"]
    expect = (torch.tensor([20.0, 50.0, 90.0]).view(3, 1, 1) / 255 - SVHN_MEAN) / SVHN_STD
    assert torch.allclose(img, expect.expand(3, 6, 6), atol=1e-5)
    omni = train[4]
    assert int(omni["omniglot"]) == 0
    # inverted: white background -> 0, black stroke -> 255
    assert omni["image"][0, 0, 0].item() == pytest.approx(_omniglot_norm(0.0), abs=1e-6)
    stroke = omni["image"][:, :, 2]
    assert torch.allclose(stroke, torch.full((3, 6), _omniglot_norm(255.0)), atol=1e-6)
    assert int(train[train.domain_indices("omniglot")[-1]]["omniglot"]) == 1  # evaluation set
    plain = SVHNOmniglot(root=str(tmp_path), size=6, invert_omniglot=False)
    assert plain[4]["image"][0, 0, 0].item() == pytest.approx(_omniglot_norm(255.0), abs=1e-6)
    val = SVHNOmniglot(root=str(tmp_path), split="val", size=6)
    assert (len(val.domain_indices("svhn")), len(val.domain_indices("omniglot"))) == (1, 2)
    assert int(val[0]["svhn"]) == 0  # the 5th image, label 10
    test = SVHNOmniglot(root=str(tmp_path), split="test", size=6)
    assert [int(test[i]["svhn"]) for i in range(2)] == [5, 0]


def test_malformed_mat_files(tmp_path):
    _torchvision(tmp_path)
    x = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[1], [11]])})
    with pytest.raises(ValueError, match=r"train_32x32.mat: y must hold 2 labels in 1..10, got"):
        SVHNOmniglot(root=str(tmp_path))
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x.astype(np.float64), "y": [[1], [2]]})
    with pytest.raises(ValueError, match=r"train_32x32.mat: X must be uint8 \[32, 32, 3, N\]"):
        SVHNOmniglot(root=str(tmp_path))
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage" * 30)
    with pytest.raises(ValueError, match=r"cannot read .*test_32x32.mat"):
        SVHNOmniglot(root=str(tmp_path), split="test")


def test_too_few_omniglot_drawings(tmp_path):
    _torchvision(tmp_path, n_drawings=2)
    with pytest.raises(
        ValueError, match=r"character01 has 2 drawings, too few for a non-empty 'val'"
    ):
        SVHNOmniglot(root=str(tmp_path), split="val")


def test_malformed_decathlon_trees(tmp_path):
    data = _decathlon(tmp_path, svhn_classes=9)
    with pytest.raises(ValueError, match=r"svhn/train has 9 class folders, expected 10"):
        SVHNOmniglot(root=str(tmp_path))
    _decathlon(tmp_path / "second")
    data = tmp_path / "second" / "decathlon-1.0-data"
    _save(data / "omniglot" / "val" / "zzz" / "0.png", TALL)
    with pytest.raises(
        ValueError, match=r"omniglot/val/zzz has no counterpart in .*omniglot/train"
    ):
        SVHNOmniglot(root=str(data), split="val")
    _save(data / "svhn" / "train" / "01" / "0.png", TALL)  # grey where RGB is expected
    ds = SVHNOmniglot(root=str(data))
    with pytest.raises(ValueError, match=r"svhn/train/01/0.png: svhn images must be of mode RGB"):
        ds[0]


def test_root_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root is not set.*decathlon-1.0-data"):
        SVHNOmniglot()
    with pytest.raises(FileNotFoundError, match=r"train_32x32.mat does not exist"):
        SVHNOmniglot(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no Decathlon folders under"):
        SVHNOmniglot(root=str(tmp_path), format="decathlon")
