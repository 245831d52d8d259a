"""The ``synthetic`` dataset: determinism, exact-label invariants, knobs, cache, config errors."""

import inspect
import math
import pickle

import attrs
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pymtl.data.base import Dataset
from pymtl.data.synthetic import PRESETS, TASK_NAMES, SyntheticConfig, SyntheticScenes
from pymtl.data.synthetic.labels import BACKGROUND_ID
from pymtl.data.synthetic.targets import DEPTH_NOISE
from pymtl.plugins import get_registry
from pymtl.testing import check_component

SMALL = {"image_size": 32, "train_size": 8, "val_size": 4, "test_size": 4}


def make(**options):
    return SyntheticScenes(**{**SMALL, **options})


@pytest.fixture(scope="module")
def clean():
    """Clean renders and scenes of 8 train samples (32 px) and 2 val samples (64 px)."""
    out = []
    for ds, n in ((make(), 8), (make(image_size=64, split="val"), 2)):
        out += [(ds.render(i), ds.scene(i)) for i in range(n)]
    return out


def assert_items_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]) or (  # presence may hold NaN when unlabelled
            torch.isnan(a[key]).all() and torch.isnan(b[key]).all()
        ), key


# ---------------------------------------------------------------------------------------------
# component contract


def test_conformance():
    check_component(SyntheticScenes, Dataset)
    assert get_registry(autoload=False).get("dataset", "synthetic") is SyntheticScenes


def test_init_defaults_are_the_config_defaults():
    params = inspect.signature(SyntheticScenes.__init__).parameters
    defaults = {k: p.default for k, p in params.items() if k != "self"}
    config = attrs.asdict(SyntheticConfig())
    assert defaults.keys() == config.keys()
    for key, value in defaults.items():
        mapping = key.startswith("label") or key == "loss_scale"  # None stands for {}
        assert (value or {}) == config[key] if mapping else value == config[key]


def test_presets():
    assert PRESETS["standard"] == SyntheticConfig()
    smoke = PRESETS["smoke"]
    assert (smoke.image_size, smoke.train_size, smoke.val_size) == (64, 256, 128)
    assert smoke.tasks == ("semseg", "depth", "normals", "count")
    assert PRESETS["imbalanced"].depth_unit == "cm"
    assert PRESETS["distractor"].tasks[-1] == "noise"
    assert PRESETS["partial_labels"].labelled_fraction == {"depth": 0.5}
    for config in PRESETS.values():
        ds = SyntheticScenes.from_config(attrs.evolve(config, **SMALL))
        assert ds.task_names == config.tasks


def test_item_layouts_match_the_tasks():
    ds = make(tasks=TASK_NAMES, num_objects=4)
    item = ds[0]
    assert item["image"].shape == (3, 32, 32)
    assert item["image"].dtype == torch.float32
    assert item["image"].min() >= 0
    assert item["image"].max() <= 1
    layouts = {
        "semseg": ((32, 32), torch.int64), "depth": ((1, 32, 32), torch.float32),
        "normals": ((3, 32, 32), torch.float32), "edges": ((1, 32, 32), torch.float32),
        "parts": ((32, 32), torch.int64), "saliency": ((1, 32, 32), torch.float32),
        "count": ((), torch.int64), "presence": ((3,), torch.float32),
        "color_of_largest": ((), torch.int64), "colorseg": ((32, 32), torch.int64),
        "noise": ((32, 32), torch.int64),
    }  # fmt: skip
    assert set(item) == {"image", *layouts}
    for task in ds.tasks:
        shape, dtype = layouts[task.name]
        target = item[task.name]
        assert (tuple(target.shape), target.dtype) == (shape, dtype), task.name
        if task.name != "parts":  # parts are only defined on objects
            assert task.valid_mask(target.unsqueeze(0)).all(), task.name
        if hasattr(task, "num_classes"):
            assert target.max() < task.num_classes, task.name
    counts = {t.name: t.num_classes for t in ds.tasks if hasattr(t, "num_classes")}
    assert counts == {"semseg": 5, "parts": 6, "count": 5, "color_of_largest": 8,
                      "colorseg": 9, "noise": 4}  # fmt: skip
    depth = next(t for t in ds.tasks if t.name == "depth")
    assert 2.0 < depth.head_bias().item() < 8.0  # mean depth in metres


def test_index_out_of_range():
    ds = make()
    assert torch.equal(ds[-1]["image"], ds[7]["image"])
    with pytest.raises(IndexError, match=r"synthetic train: index 8 out of range for 8 samples"):
        ds[8]


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_same_items():
    a, b = make(tasks=TASK_NAMES), make(tasks=TASK_NAMES)
    for i in (0, 5):
        assert_items_equal(a[i], b[i])
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert not torch.equal(a[0]["image"], make(seed=1)[0]["image"])
    assert not torch.equal(a[0]["image"], make(split="val")[0]["image"])


def test_order_and_workers_do_not_matter():
    ds = make(tasks=("semseg", "depth", "count"))
    forward = [ds[i] for i in range(8)]
    backward = [ds[i] for i in reversed(range(8))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert_items_equal(a, b)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    for i, item in enumerate(forward):
        assert_items_equal({k: v[i] for k, v in joined.items()}, item)


def test_scene_does_not_depend_on_image_size():
    a, b = make(image_size=16).scene(3), make(image_size=64).scene(3)
    for field in attrs.fields(type(a.objects)):
        assert np.array_equal(getattr(a.objects, field.name), getattr(b.objects, field.name))
    assert a.camera.pitch == b.camera.pitch


def test_render_options_change_the_image_only():
    plain = make(sensor_noise=0.0).render(2)
    for options in ({"supersample": True}, {"sensor_noise": 0.05}):
        other = make(**options).render(2)
        assert not np.array_equal(plain["image"], other["image"]), options
        for key in plain.keys() - {"image"}:
            assert np.array_equal(plain[key], other[key]), (options, key)


# ---------------------------------------------------------------------------------------------
# exact-label invariants (SPEC-data §3.2)


def pixel_rays(scene, size):
    """Camera-frame ray directions (u, v, -1) of the pixel centres, [size, size, 3]."""
    c = ((np.arange(size) + 0.5) / size * 2 - 1) * math.tan(scene.camera.hfov / 2)
    u, v = np.meshgrid(c, -c)
    return np.stack([u, v, -np.ones_like(u)], axis=-1)


def up_in_camera(scene):
    p = scene.camera.pitch
    return np.array([0.0, math.cos(p), math.sin(p)])


def test_depth_and_normals_are_valid(clean):
    for r, scene in clean:
        assert np.isfinite(r["depth"]).all()
        assert (r["depth"] > 0).all()
        n = r["normals"].transpose(1, 2, 0)
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
        d = pixel_rays(scene, n.shape[0])
        assert ((n * d).sum(-1) < 0).all()  # every visible surface faces the camera


def test_floor_normals_and_depth_are_analytic(clean):
    for r, scene in clean:
        floor = r["instance"] == BACKGROUND_ID
        assert floor.any()
        np.testing.assert_allclose(
            r["normals"][:, floor].T, [up_in_camera(scene)] * floor.sum(), atol=1e-5
        )
        # a floor pixel at camera-frame ray (u, v, -1) lies at z-depth h / (sin p - v cos p)
        v = pixel_rays(scene, floor.shape[0])[..., 1]
        p, h = scene.camera.pitch, scene.camera.position[1]
        expected = h / (math.sin(p) - v * math.cos(p))
        np.testing.assert_allclose(r["depth"][floor], expected[floor], rtol=1e-5)


def test_semseg_instance_parts_colorseg_agree(clean):
    for r, scene in clean:
        inst, semseg, parts = r["instance"].astype(int), r["semseg"], r["parts"]
        on = inst < BACKGROUND_ID
        room = inst[~on] - BACKGROUND_ID
        assert set(np.unique(room)) <= {0, 1, 2, 3, 4}
        assert (semseg[~on] == np.where(room == 0, 0, 1)).all()  # floor 0, walls/ceiling 1
        assert (semseg[on] == 2 + scene.objects.kind[inst[on]]).all()
        assert ((parts >= 0) == on).all()  # parts exactly on object pixels
        assert (parts[on] // 2 == semseg[on] - 2).all()  # a part of the object's own class
        assert (r["colorseg"][~on] == 0).all()
        assert (r["colorseg"][on] == 1 + scene.objects.color[inst[on]]).all()


def test_parts_follow_normals(clean):
    """Box tops and cylinder caps face up; sphere upper halves have an upward normal."""
    for r, scene in clean:
        n_up = np.einsum("chw,c->hw", r["normals"], up_in_camera(scene))
        parts = r["parts"]
        flat_top = (parts == 3) | (parts == 5)
        np.testing.assert_allclose(n_up[flat_top], 1.0, atol=1e-5)
        assert (n_up[(parts == 2) | (parts == 4)] < 1e-6).all()  # sides are vertical
        assert (n_up[parts == 0] >= -1e-6).all()
        assert (n_up[parts == 1] <= 1e-6).all()


def test_edges_are_the_instance_boundaries(clean):
    for r, _ in clean:
        inst = np.pad(r["instance"].astype(int), 1, mode="edge")
        centre = inst[1:-1, 1:-1]
        shifted = [inst[:-2, 1:-1], inst[2:, 1:-1], inst[1:-1, :-2], inst[1:-1, 2:]]
        expected = np.any([s != centre for s in shifted], axis=0)
        assert r["edges"].dtype == np.uint8
        assert np.array_equal(r["edges"], expected.astype(np.uint8))


def test_image_level_labels(clean):
    for r, scene in clean:
        inst = r["instance"].astype(int)
        ids, area = np.unique(inst[inst < BACKGROUND_ID], return_counts=True)
        assert r["count"] == len(ids)
        for c in range(3):
            assert r["presence"][c] == (r["semseg"] == 2 + c).any()
        if len(ids):
            largest = ids[area == area.max()].min()
            assert np.array_equal(r["saliency"], (inst == largest).astype(np.uint8))
            assert r["color_of_largest"] == scene.objects.color[largest]
        else:
            assert not r["saliency"].any()
            assert r["color_of_largest"] == -1
    assert any(r["count"] >= 2 for r, _ in clean)  # the invariants saw multi-object scenes


def test_image_is_8_bit(clean):
    for r, _ in clean:
        assert r["image"].dtype == np.uint8
        assert r["image"].std() > 5


# ---------------------------------------------------------------------------------------------
# knobs: hflip, depth unit, noise task, label noise, missing labels


def test_hflip_mirrors_every_dense_target():
    tasks = ("semseg", "depth", "normals", "edges", "saliency", "count", "presence")
    flip, plain = make(hflip=True, tasks=tasks), make(hflip=False, tasks=tasks)
    flipped = [i for i in range(8) if flip.flipped(i)]
    assert 0 < len(flipped) < 8
    i = flipped[0]
    a, b = flip[i], plain[i]
    for key in ("image", "semseg", "depth", "edges", "saliency"):
        assert torch.equal(a[key], b[key].flip(-1)), key
    assert torch.equal(a["normals"][0], -b["normals"][0].flip(-1))
    assert torch.equal(a["normals"][1:], b["normals"][1:].flip(-1))
    assert torch.equal(a["count"], b["count"])
    assert torch.equal(a["presence"], b["presence"])
    j = next(j for j in range(8) if not flip.flipped(j))
    assert_items_equal(flip[j], plain[j])


def test_hflip_is_per_epoch_and_train_only():
    ds = make(train_size=64, hflip=True)
    epoch0 = [ds.flipped(i) for i in range(64)]
    ds.set_epoch(1)
    epoch1 = [ds.flipped(i) for i in range(64)]
    assert epoch0 != epoch1
    assert 16 < sum(epoch1) < 48
    ds.set_epoch(0)
    assert [ds.flipped(i) for i in range(64)] == epoch0
    assert not any(make(split="val", hflip=True).flipped(i) for i in range(4))


def test_depth_unit_scales_depth_only():
    m, cm = make(tasks=("depth", "semseg")), make(tasks=("depth", "semseg"), depth_unit="cm")
    np.testing.assert_allclose(cm[1]["depth"].numpy(), 100 * m[1]["depth"].numpy(), rtol=1e-6)
    assert torch.equal(cm[1]["semseg"], m[1]["semseg"])
    assert cm.tasks[0].mean == pytest.approx(100 * m.tasks[0].mean)


def test_noise_task_is_fixed_random_classes():
    ds = make(tasks=("noise",))
    a = ds[0]["noise"]
    assert torch.equal(a, make(tasks=("noise",))[0]["noise"])
    assert not torch.equal(a, ds[1]["noise"])
    freq = torch.bincount(a.flatten(), minlength=4) / a.numel()
    assert (freq - 0.25).abs().max() < 0.06


DENSE_NOISE = ["semseg", "parts", "colorseg", "edges", "saliency", "depth", "normals"]


@pytest.mark.parametrize("task", DENSE_NOISE)
def test_label_noise_rate_dense(task):
    rate = 0.3
    clean, noisy = (
        make(tasks=(task,), hflip=False),
        make(tasks=(task,), hflip=False, label_noise={task: rate}),
    )
    changed = valid = 0
    for i in range(3):
        a, b = clean[i][task], noisy[i][task]
        if task == "normals":
            diff, ok = (a != b).any(0), torch.ones(a.shape[1:], dtype=torch.bool)
            np.testing.assert_allclose(b.norm(dim=0), 1.0, atol=1e-5)
        else:
            diff, ok = a != b, a >= 0
        changed += int(diff.sum())
        valid += int(ok.sum())
        if task == "depth":
            ratio = (b / a)[diff].log().abs()
            assert ratio.max() < 8 * DEPTH_NOISE
        if task in ("edges", "saliency"):
            assert set(b.unique().tolist()) <= {0.0, 1.0}
        if b.dtype == torch.int64:
            assert ((b >= 0) == (a >= 0)).all()  # ignored pixels stay ignored
    assert valid > 0
    assert abs(changed / valid - rate) < 0.05
    assert torch.equal(noisy[0][task], noisy[0][task])  # fixed per sample


@pytest.mark.parametrize("task", ["count", "color_of_largest", "presence"])
def test_label_noise_rate_image_level(task):
    rate, n = 0.4, 200
    opts = {"image_size": 8, "train_size": n, "tasks": (task,), "hflip": False}
    clean, noisy = make(**opts), make(**opts, label_noise={task: rate})
    a = torch.stack([clean[i][task] for i in range(n)])
    b = torch.stack([noisy[i][task] for i in range(n)])
    ok = a >= 0
    assert abs(float((a != b)[ok].float().mean()) - rate) < 0.1


def test_labelled_fraction_masks():
    opts = {"image_size": 8, "train_size": 200, "tasks": ("semseg", "depth", "presence")}
    fraction = {"depth": 0.3, "presence": 0.0}
    ds = make(**opts, labelled_fraction=fraction)
    items = [ds[i] for i in range(200)]
    mask = torch.stack([it["depth.mask"] for it in items])
    assert mask.dtype == torch.bool
    assert abs(float(mask.float().mean()) - 0.3) < 0.1
    assert all("semseg.mask" not in it for it in items)
    assert not any(it["presence.mask"] for it in items)
    again = make(**opts, labelled_fraction=fraction)
    assert all(bool(again[i]["depth.mask"]) == bool(mask[i]) for i in range(0, 200, 17))
    depth_task = ds.tasks[1]
    for it in items[:20]:
        valid = depth_task.valid_mask(it["depth"].unsqueeze(0))
        assert bool(valid.all()) == bool(it["depth.mask"])
        assert bool(valid.any()) == bool(it["depth.mask"])
        assert torch.isnan(it["presence"]).all()


# ---------------------------------------------------------------------------------------------
# cache


def test_cache_round_trips_and_is_keyed(tmp_path, monkeypatch):
    tasks = ("semseg", "depth", "normals", "count")
    opts = {"tasks": tasks, "label_noise": {"semseg": 0.2}, "labelled_fraction": {"depth": 0.5}}
    lazy = make(**opts)
    cached = make(**opts, cache_dir=str(tmp_path))
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 1
    assert folders[0].startswith(f"synthetic-v{SyntheticScenes.GENERATOR_VERSION}-")
    for i in range(8):
        assert_items_equal(cached[i], lazy[i])
    copy = pickle.loads(pickle.dumps(cached))  # what a DataLoader worker gets
    assert_items_equal(copy[3], lazy[3])
    import pymtl.data.synthetic.dataset as module

    def no_render(*args, **kwargs):
        raise AssertionError("the cache was rendered again")

    expected = lazy[5]
    monkeypatch.setattr(module, "render_sample", no_render)
    assert_items_equal(make(**opts, cache_dir=str(tmp_path))[5], expected)  # reused
    monkeypatch.undo()
    make(**opts, cache_dir=str(tmp_path), seed=3)
    make(**opts, cache_dir=str(tmp_path), image_size=16)
    make(**{**opts, "label_noise": {}}, cache_dir=str(tmp_path))  # noise is applied on read
    assert len(list(tmp_path.iterdir())) == 3


def test_cache_with_a_wrong_meta_is_refused(tmp_path):
    make(tasks=("semseg",), cache_dir=str(tmp_path))
    (folder,) = tmp_path.iterdir()
    (folder / "meta.json").write_text('{"generator_version": 0}')
    with pytest.raises(ValueError, match=r"does not match its key.*delete the folder"):
        make(tasks=("semseg",), cache_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# config errors


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 4}, r"'image_size' must be in \[8, 1024\] \(got 4\)"),
        ({"image_size": 32.0}, r"'image_size' must be an integer \(got 32.0\)"),
        ({"split": "dev"}, r"'split' must be one of train, val, test \(got 'dev'\)"),
        ({"train_size": 0}, r"'train_size' must be >= 1 \(got 0\)"),
        ({"seed": -1}, r"'seed' must be >= 0 \(got -1\)"),
        ({"num_objects": 11}, r"'num_objects' must be in \[1, 10\] \(got 11\)"),
        ({"tasks": ()}, r"'tasks' must name at least one of semseg, depth"),
        ({"tasks": ("semseg", "dpeth")}, r"'tasks' has unknown task\(s\) 'dpeth' \(expected"),
        ({"tasks": ("depth", "depth")}, r"'tasks' lists 'depth' more than once"),
        ({"tasks": "depth"}, r"'tasks' must be a list of task names \(got 'depth'\)"),
        ({"depth_unit": "km"}, r"'depth_unit' must be one of m, cm, mm \(got 'km'\)"),
        ({"label_noise": {"depth": 1.5}}, r"'label_noise'\['depth'\] must be in \[0, 1\]"),
        ({"label_noise": 0.1}, r"'label_noise' must be a table of task name -> number"),
        ({"labelled_fraction": {"edges": 0.5}},
         r"'labelled_fraction'\['edges'\]: 'edges' is not one of the configured tasks"),
        ({"hflip": 1}, r"'hflip' must be true or false \(got 1\)"),
        ({"sensor_noise": -0.1}, r"'sensor_noise' must be in \[0, 0.5\] \(got -0.1\)"),
        ({"cache_dir": ""}, r"'cache_dir' must be a non-empty path string or unset"),
    ],
)  # fmt: skip
def test_bad_config_is_refused(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SyntheticConfig(**{"tasks": ("semseg", "depth"), **options})
    with pytest.raises((ValueError, TypeError), match=message):
        SyntheticScenes(**{"tasks": ("semseg", "depth"), **options})


def test_loss_scale_multiplies_the_task_loss_only():
    from pymtl.data.synthetic.dataset import SyntheticScenes

    common = {"image_size": 16, "train_size": 2, "tasks": ("semseg", "depth")}
    plain = SyntheticScenes(**common)
    scaled = SyntheticScenes(**common, loss_scale={"depth": 100.0})
    item = plain[0]
    assert torch.equal(item["depth"], scaled[0]["depth"])  # targets unchanged
    pred = torch.zeros(1, 1, 16, 16)
    target = item["depth"][None]
    base = plain.tasks[1].loss(pred, target)
    assert scaled.tasks[1].loss(pred, target).item() == pytest.approx(100.0 * base.item())
    assert scaled.tasks[0].loss_scale == 1.0


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ({"edges": 2.0}, "'edges' is not one of the configured tasks"),
        ({"depth": 0.0}, r"'loss_scale'\['depth'\] must be finite and > 0"),
    ],
)
def test_loss_scale_validation(scale, message):
    from pymtl.data.synthetic.config import SyntheticConfig

    with pytest.raises(ValueError, match=message):
        SyntheticConfig(tasks=("semseg", "depth"), loss_scale=scale)
