"""Read a run directory written by the training engine into a plain record.

Reference: the run-directory format of the pymtl training engine [pymtl]::

    RUN/config.toml     resolved run configuration (required)
    RUN/metrics.jsonl   one JSON object per evaluation, one per line (required)
    RUN/metrics.json    final summary (absent while a run is still training)

Numbers are JSON floats and NaN is written as ``null``; inside the numeric parts of a record
(``train``, ``metrics``, ``delta``) ``null`` is read back as NaN. Every problem is reported
with the file, the line (for ``metrics.jsonl``) and the key.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from pymtl.errors import PymtlError

__all__ = ["CONFIG_FILE", "HISTORY_FILE", "SUMMARY_FILE", "Run", "RunFormatError", "load_run"]

CONFIG_FILE = "config.toml"
HISTORY_FILE = "metrics.jsonl"
SUMMARY_FILE = "metrics.json"


class RunFormatError(PymtlError, ValueError):
    """A run directory lacks a file, or a file does not hold what the run format says."""


@attrs.frozen(kw_only=True)
class Run:
    """One run directory, read [pymtl].

    Attributes:
        path: the run directory.
        config: ``config.toml`` as a plain dict.
        summary: ``metrics.json`` as a dict (NaN for ``null`` numbers), or None when the file
            does not exist yet (a run still training).
        history: the records of ``metrics.jsonl`` in file order (NaN for ``null`` numbers).

    Example:
        >>> run = load_run("runs/hps-ew-0")  # doctest: +SKIP
        >>> run.method, run.seed  # doctest: +SKIP
        (('hps', 'ew', None), 0)
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    history: list[dict[str, Any]]

    @property
    def name(self) -> str:
        """The directory name."""
        return self.path.name

    @property
    def seed(self) -> int:
        """The run's seed (``seed`` of ``config.toml``; 0 when left out, as in RunConfig)."""
        seed = self.config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RunFormatError(
                f"{self.path / CONFIG_FILE}: 'seed' must be an integer (got {seed!r})"
            )
        return seed

    @property
    def method(self) -> tuple[str, str, str | None]:
        """``(arch, balancer, distill)`` component names (``distill`` None when absent)."""
        arch, balancer = self._section_name("arch"), self._section_name("balancer")
        if arch is None or balancer is None:
            missing = "arch" if arch is None else "balancer"
            raise RunFormatError(
                f"{self.path / CONFIG_FILE}: no [{missing}] section with a 'name' "
                "(expected the resolved configuration the training engine writes)"
            )
        return arch, balancer, self._section_name("distill")

    def require_summary(self) -> dict[str, Any]:
        """``summary``, or an error naming the missing ``metrics.json``."""
        if self.summary is None:
            raise RunFormatError(
                f"{self.path / SUMMARY_FILE} does not exist: the run has no final summary "
                "(expected one written at the end of training or by `pymtl eval`)"
            )
        return self.summary

    def _section_name(self, key: str) -> str | None:
        section = self.config.get(key)
        if section is None:
            return None
        name = section.get("name") if isinstance(section, Mapping) else None
        if not isinstance(name, str):
            raise RunFormatError(
                f"{self.path / CONFIG_FILE}: [{key}] must be a table with a string 'name' "
                f"(got {section!r})"
            )
        return name


def load_run(path: str | Path) -> Run:
    """Read ``config.toml``, ``metrics.jsonl`` and (if present) ``metrics.json`` of a run."""
    root = Path(path)
    if not root.is_dir():
        raise RunFormatError(f"run directory {str(root)!r} does not exist or is not a directory")
    summary_path = root / SUMMARY_FILE
    return Run(
        path=root,
        config=_read_config(root / CONFIG_FILE),
        summary=_read_summary(summary_path) if summary_path.exists() else None,
        history=_read_history(root / HISTORY_FILE),
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RunFormatError(f"{path} does not exist (every run directory has one)") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunFormatError(f"{path} is not valid TOML: {exc}") from None


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RunFormatError(f"{path}: expected a JSON object (got {type(data).__name__})")
    where = str(path)
    for key in ("metrics", "tasks"):
        if not isinstance(data.get(key), dict):
            raise RunFormatError(f"{where}: key {key!r} must be an object (got {data.get(key)!r})")
    data["metrics"] = _numbers(data["metrics"], f"{where}: metrics", depth=2)
    delta = data.get("delta")
    if delta is not None:
        if not isinstance(delta, dict):
            raise RunFormatError(f"{where}: 'delta' must be an object or null (got {delta!r})")
        for variant in ("per_task", "per_metric", "task_then_metric"):
            if variant in delta:
                delta[variant] = _number(delta[variant], f"{where}: delta.{variant}")
    return data


def _read_history(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFormatError(f"{path} does not exist (every run directory has one)") from None
    except UnicodeDecodeError as exc:
        raise RunFormatError(f"{path} is not UTF-8 text: {exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(_history_record(line, f"{path} line {number}"))
    return records


def _history_record(line: str, where: str) -> dict[str, Any]:
    """One ``metrics.jsonl`` line, checked: ``epoch``, ``train.loss`` (and the other per-task
    training means, ``weights`` and ``distill``), ``metrics``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RunFormatError(f"{where}: not valid JSON ({exc}): {line[:80]!r}") from None
    if not isinstance(record, dict):
        raise RunFormatError(f"{where}: expected a JSON object (got {line[:80]!r})")
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise RunFormatError(f"{where}: 'epoch' must be an integer (got {epoch!r})")
    train = record.get("train")
    if not isinstance(train, dict) or not isinstance(train.get("loss"), dict):
        raise RunFormatError(f"{where}: 'train.loss' must be an object of task -> loss")
    if not isinstance(record.get("metrics"), dict):
        raise RunFormatError(f"{where}: 'metrics' must be an object of task -> metrics")
    for key, value in train.items():
        if key in ("loss", "weights", "distill"):
            train[key] = _numbers(value, f"{where}: train.{key}", depth=1)
        else:
            train[key] = _number(value, f"{where}: train.{key}")
    record["metrics"] = _numbers(record["metrics"], f"{where}: metrics", depth=2)
    return record


def _numbers(value: Any, where: str, *, depth: int) -> dict[str, Any]:
    """A ``depth``-level nested object of numbers, ``null`` read as NaN."""
    if not isinstance(value, dict):
        raise RunFormatError(f"{where} must be an object (got {value!r})")
    if depth == 1:
        return {str(k): _number(v, f"{where}.{k}") for k, v in value.items()}
    return {str(k): _numbers(v, f"{where}.{k}", depth=depth - 1) for k, v in value.items()}


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunFormatError(f"{where} must be a number or null (got {value!r})")
    return float(value)
