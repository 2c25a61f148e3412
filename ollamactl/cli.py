"""``ollamactl``: list, show, cp, rm (and more to come) against the local daemon."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from ollamactl import __version__, render
from ollamactl.client import Client, ClientError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """One line on stderr and exit status 1 for anything the daemon or the connection reports."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="ollamactl",
                      message="ollamactl version is %(version)s")
def main() -> None:
    """Run and manage models served by ollamad."""


@main.command("list")
@click.argument("prefix", required=False, default="")
@reports_errors
def list_(prefix: str) -> None:
    """List models (optionally those whose name starts with PREFIX)."""
    with Client() as client:
        click.echo(render.model_list(client.call("list")["models"], prefix), nl=False)


main.add_command(list_, "ls")

_SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


@main.command()
@click.argument("model")
@click.option("--license", "license_", is_flag=True, help="Show the license.")
@click.option("--modelfile", is_flag=True, help="Show the Modelfile.")
@click.option("--parameters", is_flag=True, help="Show the parameters.")
@click.option("--system", is_flag=True, help="Show the system message.")
@click.option("--template", is_flag=True, help="Show the template.")
@click.option("-v", "--verbose", is_flag=True, help="Show full metadata.")
@reports_errors
def show(model: str, license_: bool, modelfile: bool, parameters: bool, system: bool,
         template: bool, verbose: bool) -> None:
    """Show information about a model."""
    chosen = [name for name, flag in zip(_SHOW_FIELDS, (license_, modelfile, parameters, system,
                                                         template), strict=True) if flag]
    if len(chosen) > 1:
        raise click.UsageError("only one of '--license', '--modelfile', '--parameters', "
                               "'--system', or '--template' can be specified")
    with Client() as client:
        info = client.call("show", {"model": model, "verbose": verbose})
    if not chosen:
        click.echo(render.show_summary(info), nl=False)
    elif chosen[0] in ("system", "template"):
        click.echo(info.get(chosen[0], ""), nl=False)
    else:
        click.echo(info.get(chosen[0], ""))


@main.command()
@click.argument("source")
@click.argument("destination")
@reports_errors
def cp(source: str, destination: str) -> None:
    """Copy a model."""
    with Client() as client:
        client.call("copy", {"source": source, "destination": destination})
    click.echo(f"copied '{source}' to '{destination}'")


@main.command()
@click.argument("models", nargs=-1, required=True)
@reports_errors
def rm(models: tuple[str, ...]) -> None:
    """Remove one or more models."""
    with Client() as client:
        for model in models:
            client.call("delete", {"model": model})
            click.echo(f"deleted '{model}'")
