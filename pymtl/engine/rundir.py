"""Writing a run directory (format documented in :mod:`pymtl.engine.loop`) [pymtl]."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["append_jsonl", "plain", "write_json"]


def plain(value: Any) -> Any:
    """``value`` with NaN / ±inf replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(plain(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(plain(record), indent=2) + "\n")
    tmp.replace(path)


def truncate_jsonl(path: Path, *, max_epoch: int) -> None:
    """Drop lines past ``max_epoch`` (a resumed run rewrites the epochs it repeats)."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("epoch", 0) <= max_epoch
    ]
    path.write_text("".join(line + "\n" for line in keep))
