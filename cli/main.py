"""Entry point of the `winback` console script: registers each module's commands."""

from __future__ import annotations

import typer

from cli import (
    data,
    features,
    generate,
    imports,
    learning,
    report,
    score,
    serve,
    simulate,
    train,
    world,
)

app = typer.Typer(
    name="winback",
    help="Win-back offer recommendations: data, features, training, serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Win-back offer recommendations: data, features, training, serving."""


for _module in (
    data,
    features,
    imports,
    generate,
    train,
    score,
    serve,
    report,
    learning,
    simulate,
    world,
):
    app.registered_commands += _module.app.registered_commands
    app.registered_groups += _module.app.registered_groups


def main() -> None:
    app()
