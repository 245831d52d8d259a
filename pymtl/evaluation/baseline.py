"""Stored single-task baseline results with their provenance.

Reference: SPEC-data §2.8 [pymtl]: Δ_MTL is computed from stored baseline runs whose seed and
configuration are recorded, never from numbers hard-coded in a script (Nash-MTL, Auto-Lambda)
or from the first test evaluation (LibMTL without ``base_result``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["BaselineResult"]

_FIELDS = ("metrics", "seed", "config_hash", "source", "pymtl_version")


def _current_version() -> str:
    from pymtl import __version__  # the package is fully imported by the time a record is made

    return __version__


def _plain_metrics(value: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """A deep copy as ``{task: {metric: float}}``, checked."""
    if not isinstance(value, Mapping):
        raise TypeError(f"BaselineResult.metrics must be a mapping of tasks (got {value!r})")
    out: dict[str, dict[str, float]] = {}
    for task, values in value.items():
        if not isinstance(task, str) or not isinstance(values, Mapping):
            raise TypeError(
                f"BaselineResult.metrics[{task!r}] must map metric names to numbers "
                f"(got {values!r})"
            )
        out[task] = {}
        for name, number in values.items():
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise TypeError(
                    f"BaselineResult.metrics[{task!r}][{name!r}] must be a number (got {number!r})"
                )
            out[task][str(name)] = float(number)
    return out


@attrs.frozen(kw_only=True)
class BaselineResult:
    """The metrics of one single-task baseline run (all tasks of one seed) and where they came
    from [pymtl].

    Attributes:
        metrics: ``{task: {metric: value}}`` as the metrics' ``compute()`` returned them.
        seed: the run's random seed (Δ pairs MTL and baseline runs by seed).
        config_hash: hash of the run's resolved configuration.
        source: where the numbers come from: a run directory, or a citation for values quoted
            from a paper.
        pymtl_version: version of pymtl that produced them.

    ``to_dict()`` gives a JSON-able dict (non-finite values become None); ``from_dict`` reads
    it back and rejects missing or unknown keys.

    Example:
        >>> r = BaselineResult(metrics={"seg": {"miou": 0.4}}, seed=0, config_hash="ab12",
        ...                    source="runs/stl-seg-0", pymtl_version="0.1.0")
        >>> BaselineResult.from_dict(r.to_dict()) == r
        True
    """

    metrics: dict[str, dict[str, float]] = attrs.field(converter=_plain_metrics)
    seed: int = attrs.field(validator=attrs.validators.instance_of(int))
    config_hash: str = attrs.field(validator=attrs.validators.instance_of(str))
    source: str = attrs.field(validator=attrs.validators.instance_of(str))
    pymtl_version: str = attrs.field(
        factory=_current_version, validator=attrs.validators.instance_of(str)
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: NaN and ±inf are written as None."""
        metrics = {
            task: {name: (v if math.isfinite(v) else None) for name, v in values.items()}
            for task, values in self.metrics.items()
        }
        return {
            "metrics": metrics,
            "seed": self.seed,
            "config_hash": self.config_hash,
            "source": self.source,
            "pymtl_version": self.pymtl_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "baseline") -> BaselineResult:
        """Read :meth:`to_dict`'s output (None values become NaN); ``where`` names the origin
        (a file path) in errors."""
        missing = [key for key in _FIELDS if key not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise ValueError(
                f"{where}: a baseline record needs exactly the keys {', '.join(_FIELDS)} "
                f"(missing: {', '.join(missing) or 'none'}; "
                f"unknown: {', '.join(unknown) or 'none'})"
            )
        metrics = data["metrics"]
        if isinstance(metrics, Mapping):
            metrics = {
                task: (
                    {k: (math.nan if v is None else v) for k, v in values.items()}
                    if isinstance(values, Mapping)
                    else values
                )
                for task, values in metrics.items()
            }
        try:
            return cls(**{key: data[key] for key in _FIELDS if key != "metrics"}, metrics=metrics)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: invalid baseline record: {exc}") from exc
