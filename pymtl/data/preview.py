"""``pymtl data preview``: a PNG montage of a dataset's images and every label [pymtl].

Rows are samples; columns are the image and each dense task's target rendered by its kind:
label maps through a fixed palette (ignored pixels black), depth through a perceptual colour
ramp with the range in the legend, normals as ``(n + 1) / 2`` RGB, binary maps in grey.
Image-level targets are written under each row; a sample without a task's label shows a grey
"unlabelled" tile. The legend names every class colour, so a person can check labels by eye.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pymtl.data.base import Dataset
from pymtl.tasks.base import DepthTask, NormalsTask, SegmentationTask, Task, _BinaryDenseTask

__all__ = ["PALETTE", "colorize", "montage", "save_preview"]

# 20 well-separated colours (class 0 first); label c uses PALETTE[c % 20].
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]],
    dtype=np.uint8,
)  # fmt: skip
# Perceptual ramp (dark blue -> green -> yellow), interpolated between these stops.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])
_UNLABELLED = (160, 160, 160)
_TILE_GAP = 4


def _ramp(values: np.ndarray) -> np.ndarray:
    x = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_RAMP) - 2)
    frac = (x - lo)[..., None]
    rgb: np.ndarray = ((1 - frac) * _RAMP[lo] + frac * _RAMP[lo + 1]).astype(np.uint8)
    return rgb


def colorize(task: Task, target: torch.Tensor, *, depth_range: tuple[float, float]) -> np.ndarray:
    """An [H, W, 3] uint8 picture of one sample's dense ``target`` for ``task``."""
    t = target.detach().cpu()
    valid = task.valid_mask(t.unsqueeze(0))[0].numpy()
    if isinstance(task, SegmentationTask):
        labels = t.numpy().astype(np.int64)
        rgb = PALETTE[np.where(valid, labels, 0) % len(PALETTE)]
    elif isinstance(task, DepthTask):
        lo, hi = depth_range
        rgb = _ramp((t[0].numpy() - lo) / max(hi - lo, 1e-12))
        valid = valid[0]
    elif isinstance(task, NormalsTask):
        rgb = ((t.permute(1, 2, 0).numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8)
        valid = valid[0]
    elif isinstance(task, _BinaryDenseTask):  # grey levels
        valid = valid[0]
        grey = (np.nan_to_num(t[0].float().numpy()).clip(0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    else:  # any other dense map: its first channel on the colour ramp, over its valid range
        valid = valid.reshape(-1, *valid.shape[-2:])[0]
        x = np.nan_to_num(t.reshape(-1, *t.shape[-2:])[0].double().numpy())
        lo, hi = (x[valid].min(), x[valid].max()) if valid.any() else (0.0, 1.0)
        rgb = _ramp((x - lo) / max(hi - lo, 1e-12))
    return np.where(valid[..., None], rgb, 0).astype(np.uint8)


def _image_rgb(image: torch.Tensor) -> np.ndarray:
    x = image.detach().cpu().float()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:  # normalised input: stretch back to [0, 1] for display
        x = (x - lo) / max(hi - lo, 1e-12)
    return (x.permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)


def _scalar_text(task: Task, target: torch.Tensor) -> str:
    values = target.detach().cpu().flatten().tolist()
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (" …" if len(values) > 8 else "")
    return f"{task.name}={shown}" if len(values) == 1 else f"{task.name}=[{shown}]"


def _depth_range(
    items: Sequence[dict[str, torch.Tensor]], tasks: Sequence[Task]
) -> tuple[float, float]:
    values = [
        item[t.name][t.valid_mask(item[t.name].unsqueeze(0))[0]]
        for item in items
        for t in tasks
        if isinstance(t, DepthTask)
    ]
    joined = torch.cat([v.flatten().float() for v in values]) if values else torch.zeros(0)
    return (float(joined.min()), float(joined.max())) if joined.numel() else (0.0, 1.0)


def montage(dataset: Dataset, indices: Sequence[int], *, scale: int = 2) -> Image.Image:
    """Render the samples ``indices`` of ``dataset`` with their labels and a legend."""
    items = [dataset[i] for i in indices]
    dense = [t for t in dataset.tasks if t.dense]
    flat = [t for t in dataset.tasks if not t.dense]
    depth_range = _depth_range(items, dense)
    font = ImageFont.load_default(size=11)
    rows = [_row(item, dense, flat, depth_range, scale) for item in items]
    width = max(r[0].width for r in rows)
    legend = _legend(dataset.tasks, depth_range, width, font)
    header_h, text_h = 16, 14
    height = header_h + sum(r[0].height + text_h for r in rows) + legend.height
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    tile_w = rows[0][0].width // (1 + len(dense)) if rows else 0
    for col, title in enumerate(["image", *[t.name for t in dense]]):
        draw.text((col * tile_w + 2, 2), title, fill="black", font=font)
    y = header_h
    for (strip, text), index in zip(rows, indices, strict=True):
        canvas.paste(strip, (0, y))
        draw.text((2, y + strip.height + 1), f"#{index}  {text}", fill="black", font=font)
        y += strip.height + text_h
    canvas.paste(legend, (0, y))
    return canvas


def _row(
    item: dict[str, torch.Tensor],
    dense: Sequence[Task],
    flat: Sequence[Task],
    depth_range: tuple[float, float],
    scale: int,
) -> tuple[Image.Image, str]:
    tiles = [_image_rgb(item["image"])]
    h, w = tiles[0].shape[:2]
    for task in dense:
        labelled = bool(item.get(f"{task.name}.mask", torch.tensor(True)))
        tile = colorize(task, item[task.name], depth_range=depth_range) if labelled else None
        tiles.append(tile if tile is not None else np.full((h, w, 3), _UNLABELLED, np.uint8))
    gap = np.full((h, _TILE_GAP, 3), 255, np.uint8)
    strip = np.concatenate([x for tile in tiles for x in (tile, gap)], axis=1)
    image = Image.fromarray(strip).resize(
        (strip.shape[1] * scale, h * scale), Image.Resampling.NEAREST
    )
    text = "  ".join(
        _scalar_text(t, item[t.name])
        if bool(item.get(f"{t.name}.mask", torch.tensor(True)))
        else f"{t.name}=unlabelled"
        for t in flat
    )
    return image, text


def _legend(
    tasks: Sequence[Task],
    depth_range: tuple[float, float],
    width: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> Image.Image:
    Swatch = tuple[tuple[int, ...], str]
    lines: list[tuple[str, list[Swatch]]] = []
    for task in tasks:
        if isinstance(task, SegmentationTask) and task.dense:
            names = task.class_names or tuple(str(c) for c in range(task.num_classes))
            swatches = [
                (tuple(int(v) for v in PALETTE[c % len(PALETTE)]), n) for c, n in enumerate(names)
            ]
            lines.append((f"{task.name} (ignore {task.ignore_index} = black):", swatches))
        elif isinstance(task, DepthTask):
            lo, hi = depth_range
            ramp = [
                (tuple(int(v) for v in _RAMP[0]), f"{lo:.3g}"),
                (tuple(int(v) for v in _RAMP[-1]), f"{hi:.3g}"),
            ]
            lines.append((f"{task.name} (invalid = black):", ramp))
    lines.append(("normals: RGB = (n + 1) / 2; grey tiles: unlabelled", []))
    image = Image.new("RGB", (max(width, 400), 8 + 16 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for row, (title, swatches) in enumerate(lines):
        y, x = 4 + 16 * row, 2
        draw.text((x, y), title, fill="black", font=font)
        x += int(draw.textlength(title, font=font)) + 6
        for colour, name in swatches:
            draw.rectangle((x, y + 1, x + 10, y + 11), fill=tuple(colour), outline="black")
            draw.text((x + 13, y), name, fill="black", font=font)
            x += 13 + int(draw.textlength(name, font=font)) + 8
    return image


def save_preview(dataset: Dataset, path: str | Path, *, num: int = 8, scale: int = 2) -> Path:
    """Write the montage of the first ``num`` samples to ``path`` (PNG) and return the path."""
    if num < 1:
        raise ValueError(f"preview: num must be >= 1 (got {num})")
    n = min(num, len(dataset))
    if n == 0:
        raise ValueError(f"preview: dataset {dataset.name!r} is empty")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    montage(dataset, list(range(n)), scale=scale).save(path, format="PNG")
    return path
