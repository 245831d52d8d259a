"""``pascal_context`` on tiny files written in ASTMT's exact PASCAL_MT layout."""

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from pymtl.data._label_edges import label_edges
from pymtl.data.base import Dataset
from pymtl.data.pascal_mt import NORMALS_CONTEXT_CLASSES, PascalContext
from pymtl.errors import DataFormatError
from pymtl.tasks import PartsTask
from pymtl.testing import check_component

H, W = 8, 12
SPLITS = {"train": ["2008_000002", "2008_000003", "2008_000007"], "val": ["2008_000009"]}
CHAIR, ACCORDION, PERSON_CTX = 72, 1, 284  # context ids: chair/person have normals, accordion not


def save_png(path, arr, *, palette=False):
    img = Image.fromarray(arr)
    if palette:  # a VOC-style palette PNG: the stored values are the indices
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def save_parts(path, objects):
    """PASCAL-Part ``anno``: objects = [(class_ind, {part_name: mask})]."""
    objs = np.empty(
        (len(objects),), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    )
    for k, (cls, parts) in enumerate(objects):
        arr = np.empty((len(parts),), dtype=[("part_name", "O"), ("mask", "O")])
        for j, (name, mask) in enumerate(parts.items()):
            arr[j] = (name, mask.astype(np.uint8))
        whole = np.ones((H, W), dtype=np.uint8)
        objs[k] = (
            f"class{cls}",
            np.array([[cls]], np.uint8),
            whole,
            arr if parts else np.zeros((0, 0)),
        )
    anno = np.empty((1,), dtype=[("imname", "O"), ("objects", "O")])
    anno[0] = ("image", objs)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(path, {"anno": anno})


def write_sample(root, k, sid, rng):
    label_map = np.full((H, W), CHAIR, dtype=np.uint16)
    label_map[:, 6:] = ACCORDION if k == 0 else PERSON_CTX
    if k > 0:
        label_map[5:, 2:5] = rng.choice([ACCORDION, 427, 458])
    semseg = rng.integers(0, 21, size=(H, W)).astype(np.uint8)
    semseg[0, 0] = 255
    head, leg = np.zeros((H, W), bool), np.zeros((H, W), bool)
    head[:3, 6:], leg[5:, 6:9] = True, True
    objects = [(15, {"head": head, "llleg": leg}), (9, {})] if k == 0 else [(9, {}), (15, {})]
    normals = rng.normal(size=(H, W, 3))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    quantised = np.round((normals + 1) * 255 / 2).astype(np.uint8)
    sal = rng.choice(np.array([0, 127, 128, 255], dtype=np.uint8), size=(H, W))
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
        root / "JPEGImages" / f"{sid}.jpg", quality=95
    )
    folder = "pascal-context" if k == 1 else "VOC12"  # the fallback when VOC12 has no file
    save_png(root / "semseg" / folder / f"{sid}.png", semseg, palette=k == 2)
    save_parts(root / "human_parts" / f"{sid}.mat", objects)
    save_png(root / "normals_distill" / f"{sid}.png", quantised)
    save_png(root / "sal_distill" / f"{sid}.png", sal)
    sio.savemat(root / "pascal-context" / "trainval" / f"{sid}.mat", {"LabelMap": label_map})
    return {"labels": label_map, "semseg": semseg, "normals": quantised, "sal": sal}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "pascal-context" / "trainval").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Context").mkdir(parents=True)
    rng = np.random.default_rng(5)
    written = {}
    for split, ids in SPLITS.items():
        (tmp_path / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(ids))
        for k, sid in enumerate(ids):
            written[sid] = write_sample(tmp_path, k, sid, rng)
    return tmp_path, written


def test_values_match_the_files(root):
    path, written = root
    ds = PascalContext(root=str(path), size=None, image_norm="none")
    for k, sid in enumerate(SPLITS["train"]):
        item, arrays = ds[k], written[sid]
        decoded = np.asarray(Image.open(path / "JPEGImages" / f"{sid}.jpg").convert("RGB")) / 255
        torch.testing.assert_close(
            item["image"], torch.from_numpy(decoded).permute(2, 0, 1).float()
        )
        assert torch.equal(item["semseg"], torch.from_numpy(arrays["semseg"]).long())
        keep = np.isin(arrays["labels"], NORMALS_CONTEXT_CLASSES)[..., None]
        normals = np.where(keep, 2.0 * arrays["normals"] / 255 - 1, 0.0)
        torch.testing.assert_close(
            item["normals"], torch.from_numpy(normals).permute(2, 0, 1).float()
        )
        assert torch.equal(item["saliency"][0], torch.from_numpy(arrays["sal"] >= 128).float())
        assert torch.equal(item["edges"][0], torch.from_numpy(label_edges(arrays["labels"])))
    first = ds[0]
    assert (first["normals"][:, :, 6:] == 0).all()  # accordion: no normals
    assert first["edges"][0, 1:, 5].tolist() == [1.0] * (H - 1)  # chair | accordion boundary
    assert first["edges"].sum() == H - 1


def test_human_parts(root):
    path, _ = root
    ds = PascalContext(root=str(path), tasks=("human_parts",), size=None)
    parts = ds[0]["human_parts"]
    assert (parts[:3, 6:] == 1).all()  # head
    assert (parts[5:, 6:9] == 6).all()  # llleg → lower leg
    assert (parts[:, :6] == 0).all()  # background
    assert bool(ds[0]["human_parts.mask"])
    for k in (1, 2):  # no person; a person without parts: all ignored, unlabelled
        assert (ds[k]["human_parts"] == 255).all()
        assert not bool(ds[k]["human_parts.mask"])


def test_tasks_declare_the_conventions(root):
    path, _ = root
    semseg, parts, normals, sal, edges = PascalContext(root=str(path)).tasks
    assert (semseg.num_classes, semseg.ignore_index, semseg.class_names[15]) == (21, 255, "person")
    assert isinstance(parts, PartsTask)
    assert (parts.num_classes, parts.ignore_index) == (7, 255)
    assert normals.loss_type == "l1"
    assert sal.kind == "saliency"
    assert (edges.pos_weight, edges.tolerance) == (0.95, 0.0075)


def test_resize_and_augment(root):
    path, _ = root
    ds = PascalContext(root=str(path), size=(16, 24), augment=True, seed=2)
    for k in range(len(ds)):
        item = ds[k]
        assert item["image"].shape == (3, 16, 24)
        assert item["image"].min() < 0  # ImageNet normalisation by default
        assert set(item["semseg"].unique().tolist()) <= set(range(21)) | {255}
        assert set(item["edges"].unique().tolist()) <= {0.0, 1.0, 255.0}
        norms = item["normals"].norm(dim=0)
        torch.testing.assert_close(norms[norms > 0], torch.ones(int((norms > 0).sum())))
        assert torch.equal(ds[k]["edges"], item["edges"])


def test_out_of_range_semseg_names_the_file(root):
    path, _ = root
    save_png(path / "semseg" / "VOC12" / "2008_000009.png", np.full((H, W), 21, np.uint8))
    with pytest.raises(DataFormatError, match=r"class ids out of range \(got \[21\].*000009\.png"):
        PascalContext(root=str(path), split="val")[0]


def test_label_map_of_the_wrong_size_is_rejected(root):
    path, _ = root
    sio.savemat(path / "pascal-context/trainval/2008_000009.mat", {"LabelMap": np.ones((4, 4))})
    with pytest.raises(
        DataFormatError, match=r"LabelMap: wrong shape \(got \(4, 4\); expected \(8, 12\)"
    ):
        PascalContext(root=str(path), split="val")[0]
    sio.savemat(path / "pascal-context/trainval/2008_000009.mat", {"Labels": np.ones((H, W))})
    with pytest.raises(DataFormatError, match=r"variable 'LabelMap' is missing \(got \['Labels'\]"):
        PascalContext(root=str(path), split="val", tasks=("edges",))[0]


def test_grey_normals_png_is_rejected(root):
    path, _ = root
    save_png(path / "normals_distill" / "2008_000009.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DataFormatError, match=r"normals PNG: wrong shape \(got \(8, 12\)"):
        PascalContext(root=str(path), split="val")[0]


def test_unknown_part_name_is_rejected(root):
    path, _ = root
    save_parts(path / "human_parts" / "2008_000009.mat", [(15, {"tail": np.ones((H, W), bool)})])
    with pytest.raises(
        DataFormatError, match=r"unknown person part name \(got 'tail'.*000009\.mat"
    ):
        PascalContext(root=str(path), split="val")[0]


def test_missing_files_are_found_on_construction(root):
    path, _ = root
    (path / "sal_distill" / "2008_000003.png").unlink()
    with pytest.raises(DataFormatError, match=r"PASCAL saliency files: 1 file\(s\) missing"):
        PascalContext(root=str(path))
    assert len(PascalContext(root=str(path), tasks=("semseg", "edges"))) == 3
    (path / "ImageSets" / "Context" / "val.txt").unlink()
    with pytest.raises(DataFormatError, match=r"split list file is missing.*Context/val\.txt"):
        PascalContext(root=str(path), split="val")


def test_component():
    check_component(PascalContext, Dataset)
