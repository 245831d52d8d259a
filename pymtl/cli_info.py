"""``pymtl info``: parameters, multiply-adds and peak training memory per architecture
(registered on :data:`pymtl.cli.main`)."""

from __future__ import annotations

import json
from typing import Any

import attrs
import click

from pymtl.cli import main, resolve_run, run_options

__all__ = ["info_cmd"]


@main.command("info")
@run_options
@click.option(
    "--archs",
    default=None,
    help="Several architectures at once, e.g. hps,mtan,padnet (instead of --arch).",
)
@click.option(
    "--batch-size", type=int, default=8, show_default=True, help="Batch of the measured step."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
def info_cmd(archs: str | None, batch_size: int, fmt: str, print_config: bool, **opts: Any) -> None:
    """Parameters, multiply-adds and peak training memory of architectures on a dataset.

    Multiply-adds are those of one sample's forward pass at the dataset's input size; the
    memory is measured for one training step (forward, backward, Adam) on --batch-size
    samples, on --device. Example:

        pymtl info --dataset synthetic --preset standard --archs hps,mtan,padnet
    """
    from pymtl.engine.info import format_infos, measure
    from pymtl.plugins import get_registry

    registry = get_registry()
    names: list[str | None] = [a for a in (archs or "").split(",") if a] or [opts.get("arch")]
    infos = []
    for name in names:
        run = dict(opts, overrides=list(opts["overrides"]), arch=name)
        config = resolve_run(registry, run)
        infos.append(measure(config, registry, batch_size=batch_size))
    if fmt == "json":
        click.echo(json.dumps([attrs.asdict(i) for i in infos], indent=2))
    else:
        click.echo(format_infos(infos, fmt), nl=False)
