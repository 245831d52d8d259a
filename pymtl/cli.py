"""The ``pymtl`` command line: a thin layer over the registry and the config loader.

Commands: ``pymtl plugins`` (what is installed), ``pymtl config`` (resolve and print a run
configuration). Component options never become top-level flags: they live in each component's
``Config`` and are set in a TOML file or with ``--set section.key=value``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

import pymtl
from pymtl.errors import PymtlError
from pymtl.plugins import KINDS

__all__ = ["main", "run_options"]

F = TypeVar("F", bound=Callable[..., Any])

_SECTION_FLAGS = {
    "arch": "arch",
    "balancer": "balancer",
    "distill": "distill",
    "dataset": "dataset",
}


class _Group(click.Group):
    """Turns pymtl's own errors into one-line messages (exit status 2) instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PymtlError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


def _version_message() -> str:
    import torch

    from pymtl._ext import status

    return f"pymtl {pymtl.__version__} (torch {torch.__version__}; ops: {status()})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version, torch's, and which ops are compiled.",
)
def main() -> None:
    """pymtl: multi-task learning for dense prediction, with plugins."""


# ---------------------------------------------------------------------------------------------
# pymtl plugins


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(rows: Sequence[Sequence[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    return "\n".join(lines)


def plugins_listing(registry: Any, fmt: str, kind: str | None = None) -> str:
    """The text ``pymtl plugins --format fmt`` prints for ``registry``."""
    entries = list(registry.entries(kind))
    if fmt == "json":
        return json.dumps([e.as_dict() for e in entries], indent=2)
    rows = [("kind", "name", "distribution", "version", "description")]
    if fmt == "markdown":
        rows = [(e.kind, f"`{e.name}`", e.distribution, e.version, e.summary) for e in entries]
        return _markdown([("kind", "name", "distribution", "version", "description"), *rows])
    rows += [(e.kind, e.name, e.distribution, e.version, e.summary) for e in entries]
    return _table(rows)


@main.command("plugins")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--kind",
    type=click.Choice([k.name for k in KINDS]),
    default=None,
    help="List one kind only.",
)
def plugins_cmd(fmt: str, kind: str | None) -> None:
    """List every registered component: kind, name, distribution, version, description.

    Plugins that failed to load are reported on standard error, with their distribution and
    the exception; everything else still loads.
    """
    from pymtl.plugins import get_registry

    registry = get_registry()
    for failure in registry.failures:
        click.echo(f"warning: {failure}", err=True)
    click.echo(plugins_listing(registry, fmt, kind))


# ---------------------------------------------------------------------------------------------
# run configuration


def run_options(f: F) -> F:
    """The options every command that builds a run accepts (config file, overrides, components)."""
    options = [
        click.option(
            "--config",
            "-c",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML run configuration.",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override one key, e.g. --set balancer.weights.seg=2 (repeatable).",
        ),
        click.option("--dataset", default=None, help="Dataset name (a registered component)."),
        click.option(
            "--preset",
            default=None,
            help="A named configuration of the dataset (e.g. smoke for synthetic).",
        ),
        click.option("--arch", default=None, help="Architecture name."),
        click.option("--balancer", default=None, help="Balancer name."),
        click.option("--distill", default=None, help="Distillation loss name."),
        click.option(
            "--grouping",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="Grouping file for --arch branched (arch.grouping), as `pymtl group select` "
            "writes it.",
        ),
        click.option("--seed", type=int, default=None, help="Random seed."),
        click.option("--device", default=None, help='Device, e.g. "cpu" or "cuda:0".'),
        click.option(
            "--print-config",
            is_flag=True,
            help="Print the fully resolved TOML configuration and exit.",
        ),
    ]
    return functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def resolve_run(registry: Any, opts: dict[str, Any]) -> Any:
    """A :class:`pymtl.config.RunConfig` from the values of :func:`run_options`."""
    from pymtl.config import load_document, resolve_config

    opts.pop("print_config", None)
    path = opts.pop("config_path")
    doc = load_document(path) if path is not None else {}
    preset = opts.pop("preset", None)
    if preset is not None:
        name = opts.get("dataset") or doc.get("dataset", {}).get("name")
        if name is None:
            from pymtl.errors import ConfigError

            raise ConfigError("--preset needs a dataset: pass --dataset NAME")
        section = doc.get("dataset", {}) if doc.get("dataset", {}).get("name", name) == name else {}
        options = _preset(registry.get("dataset", name), preset)
        doc = {**doc, "dataset": {**options, **section, "name": name}}
    flags = [
        f"{section}.name={json.dumps(opts[flag])}"
        for flag, section in _SECTION_FLAGS.items()
        if opts.get(flag) is not None
    ]
    flags += [
        f"{key}={json.dumps(opts[key])}" for key in ("seed", "device") if opts.get(key) is not None
    ]
    if opts.get("grouping") is not None:
        # absolute: the run's config.toml must still find it from another directory
        flags.append(f"arch.grouping={json.dumps(str(Path(opts['grouping']).resolve()))}")
    # flags first, then --set: an explicit --set wins over a shortcut flag
    return resolve_config(
        doc, registry, overrides=[*flags, *opts["overrides"]], source=str(path or "")
    )


@main.command("config")
@run_options
def config_cmd(**opts: Any) -> None:
    """Resolve a run configuration and print it as TOML.

    Reads --config, applies the component flags and every --set, checks the result against the
    registered components' options, and prints the fully resolved TOML: fed back with --config
    it gives the same run. (Printing is what this command does, so --print-config changes
    nothing here; the commands that run something stop after printing.)
    """
    from pymtl.config import dump_toml
    from pymtl.plugins import get_registry

    registry = get_registry()
    for failure in registry.failures:
        click.echo(f"warning: {failure}", err=True)
    click.echo(dump_toml(resolve_run(registry, opts), registry), nl=False)


# ---------------------------------------------------------------------------------------------
# pymtl data


@main.group("data")
def data_cmd() -> None:
    """Look at a dataset before training on it: preview montages and label statistics."""


def dataset_options(f: F) -> F:
    """DATASET plus the options that pick and configure it."""
    options = [
        click.argument("dataset"),
        click.option("--split", default=None, help="Split to read (sets dataset.split)."),
        click.option("--preset", default=None, help="A named configuration of the dataset."),
        click.option(
            "--config",
            "-c",
            "config_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML run configuration whose [dataset] section is used.",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a dataset option, e.g. --set dataset.image_size=128.",
        ),
    ]
    return functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def build_dataset(registry: Any, opts: dict[str, Any]) -> Any:
    """The dataset named by :func:`dataset_options`' values, built from its resolved Config."""
    from pymtl.config import load_document, resolve_config

    doc = load_document(opts["config_path"]) if opts["config_path"] is not None else {}
    cls = registry.get("dataset", opts["dataset"])
    section = dict(doc.get("dataset", {})) if isinstance(doc.get("dataset"), dict) else {}
    if opts["preset"] is not None:
        section = {**_preset(cls, opts["preset"]), **section}
    if section.get("name", opts["dataset"]) != opts["dataset"]:
        section = {}  # the file configures another dataset: its options do not apply
    doc = {**doc, "dataset": {**section, "name": opts["dataset"]}}
    split = [f"dataset.split={json.dumps(opts['split'])}"] if opts["split"] else []
    run = resolve_config(
        doc, registry, overrides=[*split, *opts["overrides"]], source=str(opts["config_path"] or "")
    )
    assert run.dataset is not None  # set above
    return cls.from_config(run.dataset.options)


def _preset(cls: Any, name: str) -> dict[str, Any]:
    import cattrs

    from pymtl.errors import ConfigError

    presets = getattr(cls, "PRESETS", {})
    if name not in presets:
        raise ConfigError(
            f"dataset {cls.name!r} has no preset {name!r} "
            f"(available: {', '.join(sorted(presets)) or 'none'})"
        )
    doc: dict[str, Any] = cattrs.Converter().unstructure(presets[name])
    return doc


@data_cmd.command("preview")
@dataset_options
@click.option(
    "-n", "--num", type=click.IntRange(min=1), default=8, show_default=True, help="Samples to show."
)
@click.option(
    "--scale", type=click.IntRange(min=1), default=2, show_default=True, help="Pixel magnification."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG to write [default: preview-DATASET.png].",
)
def data_preview_cmd(num: int, scale: int, out: Path | None, **opts: Any) -> None:
    """Write a PNG montage: the image and every label of the first N samples, with a legend."""
    from pymtl.data.preview import save_preview
    from pymtl.plugins import get_registry

    dataset = build_dataset(get_registry(), opts)
    path = save_preview(
        dataset, out or Path(f"preview-{opts['dataset']}.png"), num=num, scale=scale
    )
    click.echo(
        f"wrote {path} ({min(num, len(dataset))} samples, tasks: "
        f"{', '.join(t.name for t in dataset.tasks)})"
    )


@data_cmd.command("stats")
@dataset_options
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use only the first LIMIT samples."
)
def data_stats_cmd(limit: int | None, **opts: Any) -> None:
    """Print class frequencies and value ranges of every task over a split."""
    from pymtl.data.stats import dataset_stats, format_stats
    from pymtl.plugins import get_registry

    dataset = build_dataset(get_registry(), opts)
    click.echo(format_stats(dataset, dataset_stats(dataset, limit=limit)))


# the run commands (train, eval, baselines, sweep, compare) live in their own module
from pymtl import cli_group, cli_info, cli_run  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
