"""``ollamad``: the daemon's command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ollamad import __version__


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from ollamad.durations import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds < 0:
        raise click.BadParameter("must not be negative")
    return seconds


@click.group()
@click.version_option(__version__, "-v", "--version", prog_name="ollamad")
def main() -> None:
    """ollamad: a local LLM service with an Ollama-compatible store and API."""


@main.command()
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), default=None,
              help="Unix socket to listen on when systemd passes none "
                   "[default: $OLLAMAD_SOCKET, $RUNTIME_DIRECTORY/ollamad.sock, "
                   "$XDG_RUNTIME_DIR/ollamad.sock, ~/.ollama/ollamad.sock].")
@click.option("--idle-exit", callback=_duration, default=None, metavar="DURATION",
              help="Exit after this long with no connection, request or loaded model "
                   "(for socket activation), e.g. 5m or 300.")
@click.option("--shutdown-timeout", callback=_duration, default="30s", metavar="DURATION",
              help="On SIGTERM, how long in-flight requests may take to finish.")
@click.option("--http", "http", default=None, metavar="ADDR|none",
              help="Serve Ollama's HTTP API (and the OpenAI one) on ADDR, read as OLLAMA_HOST "
                   "is, or not at all with 'none'; a socket systemd passes is used instead "
                   "[default: $OLLAMA_HOST, else 127.0.0.1:11434].")
def serve(socket_path: Path | None, idle_exit: float | None, shutdown_timeout: float,
          http: str | None) -> None:
    """Run the daemon in the foreground."""
    import trio

    from ollamad import logs
    from ollamad.config import Settings, socket_candidates
    from ollamad.daemon import ServeOptions, StartupError
    from ollamad.daemon import serve as run

    settings = Settings.from_env()
    logs.setup(settings.debug, settings.identity_dir / "logs")
    options = ServeOptions(socket_path or socket_candidates(os.environ)[0], idle_exit,
                           shutdown_timeout, http)
    try:
        trio.run(run, settings, options)
    except StartupError as exc:
        click.echo(f"ollamad: {exc}", err=True)
        sys.exit(1)
