"""Run configuration: frozen attrs classes, loaded from and written to TOML through cattrs.

A run is described by one TOML document::

    seed = 0
    device = "cpu"

    [balancer]
    name = "fixed"            # step 1: registry lookup
    weights = { edge = 50.0 } # step 2: the rest goes into that class's Config

    [train]
    epochs = 10

Component sections (``arch``, ``balancer``, ``distill``, ``dataset``) resolve in two steps:
the ``name`` is looked up in the plugin registry, then the other keys are structured into that
component's ``Config``. Unknown keys anywhere are errors that give their path
(``$.balancer.alpah``) and what was expected. ``--set section.key=value`` overrides are applied
to the document before it is checked; :func:`dump_toml` writes the fully resolved config,
which loads back to an equal one.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import cattrs
import tomli_w
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from pymtl.errors import ConfigError, UnknownComponentError
from pymtl.plugins import Registry

__all__ = [
    "ArchSection",
    "BackboneSection",
    "BalancerSection",
    "ComponentSection",
    "DatasetSection",
    "DistillSection",
    "RunConfig",
    "TeacherConfig",
    "TrainConfig",
    "apply_overrides",
    "converter",
    "dump_toml",
    "load_config",
    "parse_override",
    "resolve_config",
]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name!r} must be > 0 (got {value!r})")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name!r} must be >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class ComponentSection:
    """A ``[section]`` naming a registered component and holding its ``Config``."""

    kind: ClassVar[str]
    name: str
    options: Any = None

    @property
    def component(self) -> str:
        return f"{self.kind} {self.name!r}"


@attrs.frozen(kw_only=True)
class ArchSection(ComponentSection):
    kind: ClassVar[str] = "architecture"


@attrs.frozen(kw_only=True)
class BalancerSection(ComponentSection):
    kind: ClassVar[str] = "balancer"


@attrs.frozen(kw_only=True)
class DistillSection(ComponentSection):
    kind: ClassVar[str] = "distillation_loss"


@attrs.frozen(kw_only=True)
class DatasetSection(ComponentSection):
    kind: ClassVar[str] = "dataset"


@attrs.frozen(kw_only=True)
class BackboneSection(ComponentSection):
    """A backbone inside an architecture's Config: ``[arch.backbone] name = "resnet18"``."""

    kind: ClassVar[str] = "backbone"


def _one_of(*choices: str) -> Any:
    return attrs.validators.in_(choices)


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Optimisation and bookkeeping settings of a run.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step (the global batch: split across processes under torchrun).
        lr: initial learning rate of the network's optimiser.
        balancer_lr: learning rate of the balancer's own parameters (uncertainty weighting's
            log-variances, ...); 0 uses ``lr``.
        weight_decay: L2 penalty of the network's optimiser.
        optimizer: ``adam`` or ``sgd`` (momentum ``momentum``).
        momentum: SGD momentum.
        schedule: ``cosine`` (decay to ``min_lr_ratio`` × lr at the end) or ``constant``.
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``.
        steps_per_epoch: cap on steps per epoch (0: the whole split).
        eval_split: split evaluated after every epoch (``val``; ``test`` only for final runs).
        eval_batch_size: images per evaluation batch (0: ``batch_size``).
        checkpoint_every: also checkpoint every this many steps (0: at epoch ends only).
        grad_clip: clip the global gradient norm to this value (0: off).
        num_workers: data-loading worker processes.
        amp: mixed precision (bfloat16 autocast on CPU, float16 on CUDA) for the forward pass.
        compile: ``torch.compile`` the model's forward.
        grad_mode: how gradient balancers get per-task gradients: ``auto``, ``batched`` (one
            vectorised backward), ``sequential`` (one backward per task) or ``gram`` (J never
            stored); see :mod:`pymtl.engine.gradients`.
        grad_memory_mb: memory budget for the per-task gradients J in ``auto`` mode; over it,
            ``gram`` mode is used.
    """

    epochs: int = attrs.field(default=1, validator=_positive)
    batch_size: int = attrs.field(default=8, validator=_positive)
    lr: float = attrs.field(default=1e-3, validator=_positive)
    balancer_lr: float = attrs.field(default=0.0, validator=_non_negative)
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    optimizer: str = attrs.field(default="adam", validator=_one_of("adam", "sgd"))
    momentum: float = attrs.field(default=0.9, validator=_non_negative)
    schedule: str = attrs.field(default="cosine", validator=_one_of("cosine", "constant"))
    min_lr_ratio: float = attrs.field(default=0.01, validator=_non_negative)
    steps_per_epoch: int = attrs.field(default=0, validator=_non_negative)
    eval_split: str = attrs.field(default="val", validator=_one_of("train", "val", "test"))
    eval_batch_size: int = attrs.field(default=0, validator=_non_negative)
    checkpoint_every: int = attrs.field(default=0, validator=_non_negative)
    grad_clip: float = attrs.field(default=0.0, validator=_non_negative)
    num_workers: int = attrs.field(default=0, validator=_non_negative)
    amp: bool = False
    compile: bool = False
    grad_mode: str = attrs.field(
        default="auto", validator=_one_of("auto", "batched", "sequential", "gram")
    )
    grad_memory_mb: float = attrs.field(default=1024.0, validator=_positive)


@attrs.frozen(kw_only=True)
class TeacherConfig:
    """Where a distillation loss's frozen teacher comes from (``[teacher]``; only with
    ``[distill]``).

    Attributes:
        run: a finished ``pymtl train`` run directory. Required by losses that distil one
            multi-task teacher (``kdam``); for losses with single-task teachers (``kd4mtl``,
            ``bam``, ``hinton_kd``) an ``stl`` run, and empty means the single-task baselines
            store of this setting (``pymtl baselines``).
        seed: which stored baseline seed teaches (-1: the run's own ``seed``); store only.
        cache: compute the teacher's signals for the training split once, memory-mapped on
            disk, instead of running the teacher every step; refused when the training split
            is augmented (its items change between epochs).
        cache_dir: where the cache goes (empty: ``RUN/teacher-cache``).
    """

    run: str = ""
    seed: int = attrs.field(default=-1, validator=attrs.validators.ge(-1))
    cache: bool = False
    cache_dir: str = ""


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything that defines a run; ``dump_toml`` of it, fed back, reproduces it.

    Attributes:
        seed: seeds every random number generator of the run.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dataset, arch, balancer, distill: component sections (``distill`` optional).
        teacher: the distillation teacher (set, to its defaults, whenever ``distill`` is).
        train: optimisation settings.
    """

    seed: int = attrs.field(default=0, validator=_non_negative)
    device: str = "cpu"
    dataset: DatasetSection | None = None
    arch: ArchSection | None = None
    balancer: BalancerSection = attrs.field(factory=lambda: BalancerSection(name="ew"))
    distill: DistillSection | None = None
    teacher: TeacherConfig | None = None
    train: TrainConfig = attrs.field(factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# cattrs: structure (document -> objects) and unstructure (objects -> document)


def converter(registry: Registry) -> cattrs.Converter:
    """The cattrs converter of run documents: component sections resolve through ``registry``."""
    return _converter(registry)


def _converter(registry: Registry) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def structure_section(data: Any, cls: type[ComponentSection]) -> ComponentSection:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a table with a 'name' key, got {data!r}")
        if "name" not in data:
            raise KeyError("name")
        rest = {k: v for k, v in data.items() if k != "name"}
        component = registry.get(cls.kind, data["name"])
        options = conv.structure(rest, component.Config)
        return cls(name=data["name"], options=options)

    def unstructure_section(section: ComponentSection) -> dict[str, Any]:
        options = {} if section.options is None else conv.unstructure(section.options)
        return {"name": section.name, **options}

    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, ComponentSection), structure_section
    )
    conv.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, ComponentSection), unstructure_section
    )
    return conv


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.", "")


def _messages(exc: BaseException, path: str, expected: Any = None) -> Iterator[str]:
    """Flatten a cattrs error tree into 'what (got, expected) @ $.path' lines."""
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = [f.name for f in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            expected = ", ".join(allowed) if allowed else "no other keys"
            yield f"unknown key {key!r} @ {path}.{key}{hint} (expected: {expected})"
    elif isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, AttributeValidationNote):
                yield from _messages(sub, f"{path}.{note.name}", note.type)
            else:  # IterableValidationNote
                yield from _messages(sub, f"{path}[{note.index!r}]")
        for sub in without:
            yield from _messages(sub, path)
    elif isinstance(exc, UnknownComponentError):
        yield f"{exc} @ {path}.name"
    elif isinstance(exc, KeyError):
        yield f"missing required key {exc.args[0]!r} @ {path}.{exc.args[0]}"
    elif (
        expected is not None
        and isinstance(exc, (TypeError, ValueError))
        and not str(exc).startswith("'")
    ):
        yield f"invalid value @ {path}: {exc} (expected {_type_name(expected)})"
    else:
        yield f"{exc} @ {path}"


def _structure(doc: Mapping[str, Any], registry: Registry, source: str) -> RunConfig:
    try:
        return _converter(registry).structure(doc, RunConfig)
    except (ClassValidationError, IterableValidationError) as exc:
        lines = list(_messages(exc, "$"))
        where = f" in {source}" if source else ""
        raise ConfigError(f"invalid configuration{where}:\n  " + "\n  ".join(lines)) from None


# ---------------------------------------------------------------------------------------------
# documents: files, overrides, output


def load_document(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file into a plain dict; a syntax error names the file and line."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"balancer.weights.seg=2"`` -> (``["balancer", "weights", "seg"]``, ``2``).

    The value is read as a TOML value (numbers, booleans, strings, arrays, inline tables); a
    bare word that is not valid TOML is taken as a string.
    """
    key, sep, value = text.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return parts, parsed


def apply_overrides(doc: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``doc`` with each ``key.path=value`` override set (tables created as needed)."""
    out = _deep_copy(doc)
    for text in overrides:
        parts, value = parse_override(text)
        table = out
        for i, part in enumerate(parts[:-1]):
            node = table.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {text!r}: {where!r} is a value ({node!r}), not a table")
            table = node
        table[parts[-1]] = value
    return out


def _deep_copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def resolve_config(
    doc: Mapping[str, Any], registry: Registry, *, overrides: Iterable[str] = (), source: str = ""
) -> RunConfig:
    """Apply ``overrides`` to ``doc`` and structure it into a :class:`RunConfig`.

    A component section that has a default (``balancer``: ``ew``) refers to it when the document
    leaves the section out or gives no ``name`` (``--set balancer.x=1`` alone).
    """
    doc = apply_overrides(doc, overrides)
    for field in attrs.fields(RunConfig):
        default: Any = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if isinstance(default, ComponentSection):
            section = doc.setdefault(field.name, {})
            if isinstance(section, dict):
                section.setdefault("name", default.name)
    if "distill" in doc:
        doc.setdefault("teacher", {})  # resolved to its defaults: part of the run's identity
    elif "teacher" in doc:
        raise ConfigError(
            f"a [teacher] section{' in ' + source if source else ''} without a distillation "
            "loss: add --distill NAME (or a [distill] section), or drop [teacher]"
        )
    return _structure(doc, registry, source)


def load_config(
    path: str | Path | None, registry: Registry, *, overrides: Iterable[str] = ()
) -> RunConfig:
    """Load a TOML file (or the defaults when ``path`` is None), then apply ``overrides``."""
    doc = load_document(path) if path is not None else {}
    return resolve_config(doc, registry, overrides=overrides, source=str(path or ""))


def to_document(config: RunConfig, registry: Registry) -> dict[str, Any]:
    """The plain-dict form of ``config`` (``None`` values left out: TOML has no null)."""
    doc: dict[str, Any] = _drop_none(_converter(registry).unstructure(config))
    return doc


def _drop_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


def dump_toml(config: RunConfig, registry: Registry) -> str:
    """The fully resolved config as TOML; loading it gives back an equal config."""
    return tomli_w.dumps(to_document(config, registry))
