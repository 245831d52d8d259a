import numpy as np
import pytest
import torch
from PIL import Image

import pymtl
from pymtl.data.celeba import CelebA
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask, MultiLabelTask
from pymtl.testing import check_component

NAMES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]
PARTITION = {1: 0, 2: 0, 3: 1, 4: 2, 5: 0}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _signs(k):
    """Attribute values of image k: +1 where (attribute index + k) is divisible by 3."""
    return [1 if (a + k) % 3 == 0 else -1 for a in range(40)]


def _color(k):
    return (10 * k, 100 + k, 200 - k)


def _celeba(root, fmt="png", attr_rows=None, partition=None):
    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    rows = attr_rows or [
        f"{k:06d}.jpg " + " ".join(f"{v:2d}" for v in _signs(k)) for k in PARTITION
    ]
    (root / "Anno" / "list_attr_celeba.txt").write_text(
        f"{len(rows)}\n" + " ".join(NAMES) + " \n" + "\n".join(rows) + "\n"
    )
    part = partition or [f"{k:06d}.jpg {p}" for k, p in PARTITION.items()]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    folder = root / "Img" / ("img_align_celeba_png" if fmt == "png" else "img_align_celeba")
    folder.mkdir(parents=True)
    for k in PARTITION:
        Image.new("RGB", (9, 11), _color(k)).save(folder / f"{k:06d}.{fmt}")
    return folder


def test_conformance():
    check_component(CelebA, pymtl.Dataset)


def test_per_attribute_tasks_and_values(tmp_path):
    _celeba(tmp_path)
    ds = CelebA(root=str(tmp_path), size=4)
    assert ds.image_format == "png"
    assert len(ds) == 3  # images 1, 2, 5
    assert ds.names == tuple(NAMES)
    assert all(isinstance(t, ClassificationTask) and t.num_classes == 2 for t in ds.tasks)
    assert ds.task_names == tuple(NAMES)
    item = ds[2]  # image 5
    assert item["image"].shape == (3, 4, 4)
    expect = [(c / 255 - m) / s for c, m, s in zip(_color(5), MEAN, STD, strict=True)]
    assert item["image"][:, 0, 0].tolist() == pytest.approx(expect, abs=1e-6)
    labels = [int(item[n]) for n in NAMES]
    assert labels == [1 if v == 1 else 0 for v in _signs(5)]  # -1 -> 0
    assert item["Smiling"].dtype == torch.int64
    assert item["Smiling"].dim() == 0
    assert len(CelebA(root=str(tmp_path), split="val")) == 1
    assert len(CelebA(root=str(tmp_path), split="test")) == 1


def test_multilabel_and_default_size(tmp_path):
    _celeba(tmp_path)
    ds = CelebA(root=str(tmp_path), split="test", as_tasks="multilabel")
    (task,) = ds.tasks
    assert isinstance(task, MultiLabelTask)
    assert task.num_labels == 40
    assert task.label_names == tuple(NAMES)
    item = ds[0]  # image 4
    assert item["image"].shape == (3, 64, 64)
    assert item["attributes"].dtype == torch.float32
    assert item["attributes"].tolist() == [1.0 if v == 1 else 0.0 for v in _signs(4)]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert task.loss(torch.zeros(1, 40), batch["attributes"]) > 0


def test_original_jpg_layout(tmp_path):
    _celeba(tmp_path, fmt="jpg")
    ds = CelebA(root=str(tmp_path), size=8)
    assert ds.image_format == "jpg"
    assert ds.image_dir == tmp_path / "Img" / "img_align_celeba"
    image = ds[0]["image"]
    expect = torch.tensor([(c / 255 - m) / s for c, m, s in zip(_color(1), MEAN, STD, strict=True)])
    assert torch.allclose(image[:, 4, 4], expect, atol=0.1)  # JPEG is lossy
    with pytest.raises(FileNotFoundError, match=r"no image folder .*img_align_celeba_png"):
        CelebA(root=str(tmp_path), image_format="png")


@pytest.mark.parametrize(
    ("attr_rows", "partition", "message"),
    [
        (["000001.jpg " + " 0" * 40], None, r"list_attr_celeba.txt:3: expected a file name and 40"),
        (["000001.jpg" + " 1" * 39], None, r"list_attr_celeba.txt:3: expected a file name and 40"),
        (None, ["000001.jpg 3"], r"list_eval_partition.txt:1: expected '<file> 0\|1\|2'"),
        (None, ["000009.jpg 0"], r"1 image\(s\) of the split have no row in .*e.g. 000009.jpg"),
    ],
)
def test_malformed_lists(tmp_path, attr_rows, partition, message):
    _celeba(tmp_path, attr_rows=attr_rows, partition=partition)
    if attr_rows:  # the count line is right, so the row itself must be refused
        assert (tmp_path / "Anno" / "list_attr_celeba.txt").read_text().startswith("1\n")
    with pytest.raises(ValueError, match=message):
        CelebA(root=str(tmp_path))


def test_count_line_must_match(tmp_path):
    _celeba(tmp_path)
    path = tmp_path / "Anno" / "list_attr_celeba.txt"
    path.write_text("202599\n" + path.read_text().split("\n", 1)[1])
    with pytest.raises(ValueError, match=r"first line says 202599 images, the file lists 5"):
        CelebA(root=str(tmp_path))


def test_missing_and_bad_images(tmp_path):
    folder = _celeba(tmp_path)
    (folder / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* missing from .*000002.png"):
        CelebA(root=str(tmp_path))
    Image.fromarray(np.zeros((11, 9), np.uint8)).save(folder / "000002.png")
    ds = CelebA(root=str(tmp_path))
    with pytest.raises(ValueError, match=r"000002.png: expected an RGB image, got mode L"):
        ds[1]
    (folder / "000002.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read image .*000002.png"):
        ds[1]


def test_root_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root is not set.*list_attr_celeba.txt"):
        CelebA()
    with pytest.raises(FileNotFoundError, match=r"Anno/list_attr_celeba.txt does not exist"):
        CelebA(root=str(tmp_path))
