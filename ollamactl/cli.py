"""``ollamactl``: Ollama's commands (run, create, show, list, ps, cp, rm, ...) against ollamad.

Commands import what they need when they run: ``ollamactl list`` must start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ollamactl import __version__, render
from ollamactl.client import Client, ClientError, RequestFailed

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: object) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def reports_errors(func: F) -> F:
    """One line on stderr and exit status 1 for anything the daemon or the connection reports."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            fail(exc)
        except KeyboardInterrupt:
            sys.exit(130)

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
            # Unload it first, as Ollama does; a model that is not loaded is no reason to stop.
            try:
                client.call("stop", {"model": model})
            except RequestFailed as exc:
                if exc.code != "not_found" and not exc.unsupported:
                    click.echo(f"Warning: unable to stop model '{model}'", err=True)
            client.call("delete", {"model": model})
            click.echo(f"deleted '{model}'")


@main.command()
@click.argument("prefix", required=False, default="")
@reports_errors
def ps(prefix: str) -> None:
    """List running models."""
    with Client() as client:
        click.echo(render.running_models(client.call("ps")["models"], prefix), nl=False)


@main.command()
@click.argument("model")
@reports_errors
def stop(model: str) -> None:
    """Stop a running model."""
    with Client() as client:
        try:
            client.call("stop", {"model": model})
        except RequestFailed as exc:
            if exc.code == "not_found":
                fail(f"couldn't find model \"{model}\" to stop")
            raise


@main.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry.")
@reports_errors
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry."""
    from ollamactl.run import pull_model

    with Client() as client:
        pull_model(client, model, insecure)


@main.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use an insecure registry.")
@reports_errors
def push(model: str, insecure: bool) -> None:
    """Push a model to a registry."""
    from ollamactl.transfer import push_model

    push_model(model, insecure)


@main.command()
@reports_errors
def key() -> None:
    """Print the daemon's public key.

    Register it with a registry that knows Ollama keys (on ollama.com: Settings, Keys) to push.
    """
    from ollamactl.transfer import public_key

    click.echo(public_key())


@main.command()
@click.argument("model")
@click.argument("file")
@reports_errors
def export(model: str, file: str) -> None:
    """Export a model to a tar file.

    FILE (- for stdout) gets MODEL as an OCI image layout, for a machine without a registry.
    """
    from ollamactl.transfer import export_model

    try:
        export_model(model, file)
    except OSError as exc:
        fail(f"{file}: {exc.strerror}")


@main.command("import")
@click.argument("file")
@click.argument("name", required=False)
@reports_errors
def import_(file: str, name: str | None) -> None:
    """Import a model from a tar file.

    FILE (- for stdin) is an OCI image layout as export writes; the model is stored as NAME, or
    under the name the archive carries.
    """
    from ollamactl.transfer import import_model

    try:
        stored = import_model(file, name)
    except OSError as exc:
        fail(f"{file}: {exc.strerror}")
    click.echo(f"imported '{stored}'")


def _keep_alive(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ollamad.durations import parse_go_duration

    if value is not None:
        try:
            parse_go_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _format(ctx: click.Context, param: click.Parameter, value: str) -> str | dict[str, Any]:
    # "json", or a JSON schema for structured output.
    if value in ("", "json"):
        return value
    import json

    try:
        return json.loads(value)
    except ValueError:
        raise click.BadParameter(f"not 'json' nor a JSON schema: {value}") from None


def _think(ctx: click.Context, param: click.Parameter, value: str | None) -> bool | str | None:
    if value is None:
        return None
    if value in ("true", "false"):
        return value == "true"
    if value in ("low", "medium", "high", "max"):
        return value
    raise click.BadParameter(f"invalid value for --think: {value!r} (must be true, false, high, "
                             "medium, low, or max)")


@main.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--keepalive", callback=_keep_alive,
              help="Duration to keep a model loaded (e.g. 5m).")
@click.option("--verbose", is_flag=True, help="Show timings for response.")
@click.option("--insecure", is_flag=True, help="Use an insecure registry.")
@click.option("--nowordwrap", is_flag=True,
              help="Don't wrap words to the next line automatically.")
@click.option("--format", "format_", default="", callback=_format,
              help="Response format (e.g. json).")
@click.option("--think", is_flag=False, flag_value="true", default=None, callback=_think,
              help="Whether to use thinking mode for supported models (true, false, low, "
                   "medium, high, max).")
@click.option("--hidethinking", is_flag=True, help="Hide thinking output (if provided).")
@reports_errors
def run(model: str, prompt: tuple[str, ...], keepalive: str | None, verbose: bool,
        insecure: bool, nowordwrap: bool, format_: str | dict[str, Any],
        think: bool | str | None, hidethinking: bool) -> None:
    """Run a model: answer PROMPT, or chat interactively without one."""
    from ollamactl.run import run as run_model
    from ollamactl.session import Session

    session = Session(model, keep_alive=keepalive, verbose=verbose, word_wrap=not nowordwrap,
                      format=format_, think=think, hide_thinking=hidethinking)
    run_model(session, prompt, insecure)


@main.command()
@click.argument("model")
@click.option("-f", "--file", "modelfile", type=click.Path(dir_okay=False, path_type=Path),
              help='Name of the Modelfile (default "Modelfile").')
@click.option("-q", "--quantize", help="Quantize model to this level (e.g. q4_K_M).")
@reports_errors
def create(model: str, modelfile: Path | None, quantize: str | None) -> None:
    """Create a model from a Modelfile."""
    from ollamactl.create import CreateError, create_model
    from ollamad.errors import OllamadError

    try:
        create_model(model, modelfile, quantize)
    except (CreateError, OllamadError, OSError) as exc:
        fail(exc)


@main.command()
@click.argument("model")
@click.option("--from", "source", required=True, help="The model to start from.")
@click.option("--messages", "messages_file", type=click.File("rb"),
              help="A JSON array of {role, content} messages: the conversation to keep.")
@click.option("--system", default="", help="The system message.")
@reports_errors
def save(model: str, source: str, messages_file: Any, system: str) -> None:
    """Save a model with a conversation, as /save does in a chat.

    As with /save, the new model keeps the conversation stored in the one it starts from, and
    the messages given follow it.
    """
    from ollamactl.create import save_model, save_request

    messages = _read_messages(messages_file) if messages_file else []
    with Client() as client:
        stored = client.call("show", {"model": source}).get("messages") or []
    save_model(save_request(model, source, stored + messages, system))
    click.echo(f"Created new model '{model}'")


def _read_messages(file: Any) -> list[dict[str, Any]]:
    import json

    try:
        messages = json.load(file)
    except ValueError as exc:
        fail(f"{file.name}: not JSON: {exc}")
    valid = isinstance(messages, list) and all(
        isinstance(message, dict) and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str) for message in messages)
    if not valid:
        fail(f"{file.name}: expected a JSON array of {{\"role\": ..., \"content\": ...}} objects")
    return messages
