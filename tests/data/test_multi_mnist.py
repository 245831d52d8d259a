import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

import pymtl
from pymtl.data.multi_mnist import MultiMNIST, build_multi_mnist, read_idx
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask
from pymtl.testing import check_component


def _idx(path, array, code=0x08):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _raw_mnist(root, n_train=12, n_test=5):
    """Image k is constant 10·(k+1), so a pixel tells which raw image it came from."""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.repeat(np.arange(1, n + 1, dtype=np.uint8) * 10, 28 * 28).reshape(n, 28, 28)
        _idx(root / "raw" / f"{prefix}-images-idx3-ubyte", images)
        _idx(root / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)


def test_conformance():
    check_component(MultiMNIST, pymtl.Dataset)


def test_read_idx_formats(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _idx(tmp_path / "a-idx3-ubyte", a)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), a)
    b = np.array([-2, 300, 7], dtype=">i2")
    _idx(tmp_path / "b", b, code=0x0B)
    assert read_idx(tmp_path / "b").tolist() == [-2, 300, 7]
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)


def test_read_idx_rejects_malformed(tmp_path):
    _idx(tmp_path / "short", np.zeros((2, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"short: 17 bytes, expected 18 for dimensions \(2, 3\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match=r"png: not an idx file \(magic 89504e47"):
        read_idx(tmp_path / "png")


def test_build_follows_mgda_recipe(tmp_path):
    _raw_mnist(tmp_path)
    train_path, test_path = build_multi_mnist(tmp_path, seed=3)
    images, left, right = torch.load(train_path, weights_only=True)
    assert images.dtype == torch.float64
    assert images.shape == (12, 28, 28)
    assert left.dtype == right.dtype == torch.int64
    assert left.tolist() == [k % 10 for k in range(12)]
    for i in range(12):
        own, partner = 10 * (i + 1), int(images[i, 25, 25])  # canvas (32, 32): partner only
        assert images[i, 0, 0] == own  # canvas (0, 0): left digit only
        assert images[i, 10, 10] == max(own, partner)  # canvas (13, 13): overlap, pixel max
        assert images[i, 27, 27] == 0
        assert images[i, 0, 27] == 0
        assert right[i] == (partner // 10 - 1) % 10
    assert torch.load(test_path, weights_only=True)[0].shape == (5, 28, 28)


def test_build_is_seeded(tmp_path):
    _raw_mnist(tmp_path, n_train=40)
    a = torch.load(build_multi_mnist(tmp_path, seed=1)[0], weights_only=True)
    b = torch.load(build_multi_mnist(tmp_path, seed=1)[0], weights_only=True)
    c = torch.load(build_multi_mnist(tmp_path, seed=2)[0], weights_only=True)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_load_mgda_files(tmp_path):
    _raw_mnist(tmp_path)
    build_multi_mnist(tmp_path)
    images, left, right = torch.load(tmp_path / "processed" / "multi_training.pt")
    ds = MultiMNIST(root=str(tmp_path))
    assert ds.format == "mgda"
    assert len(ds) == 12
    item = ds[4]
    assert item["image"].shape == (3, 28, 28)
    expect = (images[4, 0, 0] / 255 - 0.1307) / 0.3081
    assert item["image"][:, 0, 0].tolist() == pytest.approx([float(expect)] * 3)
    assert (item["left"], item["right"]) == (left[4], right[4])
    assert item["left"].dtype == torch.int64
    assert item["left"].dim() == 0
    assert [type(t) for t in ds.tasks] == [ClassificationTask] * 2
    assert ds.task_names == ("left", "right")
    assert ds.tasks[0].num_classes == 10
    assert len(MultiMNIST(root=str(tmp_path), split="test")) == 5


def test_load_legacy_torch_serialization(tmp_path):
    """MGDA's files date from 2018: torch.save's pre-zip format must load too."""
    images = torch.full((2, 28, 28), 255.0, dtype=torch.float64)
    labels = torch.tensor([3, 9])
    data = (images, labels, labels.flip(0))
    (tmp_path / "processed").mkdir()
    path = tmp_path / "processed" / "multi_test.pt"
    torch.save(data, path, _use_new_zipfile_serialization=False)
    item = MultiMNIST(root=str(tmp_path), split="test")[1]
    assert (int(item["left"]), int(item["right"])) == (9, 3)
    assert item["image"][0, 0, 0].item() == pytest.approx((1 - 0.1307) / 0.3081)


def test_val_is_the_tail_of_train(tmp_path):
    _raw_mnist(tmp_path)
    build_multi_mnist(tmp_path)
    train = MultiMNIST(root=str(tmp_path), val_fraction=0.25)
    val = MultiMNIST(root=str(tmp_path), split="val", val_fraction=0.25)
    full = MultiMNIST(root=str(tmp_path))
    assert (len(train), len(val)) == (9, 3)
    assert torch.equal(val[0]["image"], full[9]["image"])
    with pytest.raises(ConfigError, match=r"split 'val' is empty with val_fraction=0.0"):
        MultiMNIST(root=str(tmp_path), split="val")


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_load_paretomtl_pickle(tmp_path, protocol):
    rng = np.random.default_rng(0)
    train_x = rng.random((6, 36, 36))  # stored in [0, 1]
    test_x = rng.integers(0, 256, (4, 36 * 36)).astype(np.float64)  # stored in [0, 255]
    train_y = rng.integers(0, 10, (6, 2))
    test_y = rng.integers(0, 10, (4, 2))
    with open(tmp_path / "multi_fashion.pickle", "wb") as f:
        pickle.dump((train_x, train_y, test_x, test_y), f, protocol=protocol)
    train = MultiMNIST(root=str(tmp_path), pickle_name="multi_fashion.pickle")
    assert train.format == "paretomtl"
    assert len(train) == 6
    item = train[1]
    assert item["image"].shape == (3, 36, 36)
    assert item["image"][0, 2, 3] == pytest.approx((train_x[1, 2, 3] - 0.1307) / 0.3081, rel=1e-5)
    assert [int(item["left"]), int(item["right"])] == train_y[1].tolist()
    test = MultiMNIST(root=str(tmp_path), split="test", pickle_name="multi_fashion.pickle")
    assert test[3]["image"][0, 1, 0] == pytest.approx((test_x[3, 36] / 255 - 0.1307) / 0.3081)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_cannot_run_code(tmp_path):
    with open(tmp_path / "multi_mnist.pickle", "wb") as f:
        pickle.dump((_Evil(), None, None, None), f)
    with pytest.raises(ValueError, match=r"multi_mnist.pickle: refusing to unpickle .*getcwd"):
        MultiMNIST(root=str(tmp_path))


def test_malformed_files_are_named(tmp_path):
    processed = tmp_path / "processed"
    processed.mkdir()
    images = torch.zeros(3, 28, 28, dtype=torch.float64)
    torch.save(
        (images, torch.zeros(3), torch.zeros(3, dtype=torch.int64)), processed / "multi_training.pt"
    )
    with pytest.raises(
        ValueError, match=r"multi_training.pt: labels_l must be int64 \[3\], got torch.float32"
    ):
        MultiMNIST(root=str(tmp_path))
    torch.save(
        (images, torch.tensor([0, 10, 1]), torch.zeros(3, dtype=torch.int64)),
        processed / "multi_training.pt",
    )
    with pytest.raises(ValueError, match=r"multi_training.pt: labels must be in 0..9, got 0..10"):
        MultiMNIST(root=str(tmp_path))
    torch.save((images[:, :20], torch.zeros(3, dtype=torch.int64)), processed / "multi_training.pt")
    with pytest.raises(ValueError, match=r"expected a tuple \(images, labels_l, labels_r\)"):
        MultiMNIST(root=str(tmp_path))


def test_root_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root is not set.*multi_training.pt"):
        MultiMNIST()
    with pytest.raises(FileNotFoundError, match=r"found neither .*build_multi_mnist"):
        MultiMNIST(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"multi_test.pt does not exist"):
        MultiMNIST(root=str(tmp_path), format="mgda", split="test")
