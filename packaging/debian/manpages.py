"""Write ollamad(1) and ollamactl(1) from the click commands, so the pages cannot drift.

Run with the package's own Python (the one that imports ollamad): ``python manpages.py OUTDIR``.
The date comes from SOURCE_DATE_EPOCH (set by dpkg-buildpackage) for reproducible pages.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

# Sections click does not know: where things are and which variables matter.
EXTRA = {
    "ollamad": """\
.SH ENVIRONMENT
.TP
.B OLLAMA_MODELS
The model store. Default: \\fI$STATE_DIRECTORY/models\\fR under systemd
(\\fI/var/lib/ollama/models\\fR), else \\fI~/.ollama/models\\fR.
.TP
.B OLLAMA_HOST
Address of the HTTP API when systemd passes no socket (default 127.0.0.1:11434).
.TP
.B OLLAMA_KEEP_ALIVE, OLLAMA_MAX_LOADED_MODELS, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_QUEUE, \
OLLAMA_CONTEXT_LENGTH, OLLAMA_FLASH_ATTENTION, OLLAMA_ORIGINS, OLLAMA_NOPRUNE, OLLAMA_DEBUG
As for Ollama.
.TP
.B OLLAMAD_IDLE_EXIT
Read by ollamad.service for \\fB\\-\\-idle\\-exit\\fR (default 5m).
.SH FILES
.TP
.I /etc/default/ollamad
Settings for the system service.
.TP
.I /var/lib/ollama
State of the system service: \\fImodels/\\fR, the identity \\fIid_ed25519\\fR.
.TP
.I /run/ollamad/ollamad.sock
The system service's socket, for members of group \\fBollama\\fR.
.TP
.I ~/.ollama
State in user mode.
.SH SEE ALSO
.BR ollamactl (1),
.BR systemd.socket (5),
.BR journalctl (1)
""",
    "ollamactl": """\
.SH ENVIRONMENT
.TP
.B OLLAMAD_SOCKET
The daemon's socket. Default: the first that exists of \\fI$XDG_RUNTIME_DIR/ollamad.sock\\fR,
\\fI~/.ollama/ollamad.sock\\fR and \\fI/run/ollamad/ollamad.sock\\fR.
.SH SEE ALSO
.BR ollamad (1)
""",
}


def roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line taken for a request."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def paragraphs(text: str) -> str:
    """Click's help text (paragraphs separated by blank lines, \\b blocks kept as they are)."""
    out = []
    for block in click.unstyle(text or "").strip().split("\n\n"):
        if block.startswith("\b\n"):
            out.append(".nf\n" + roff(block[2:]) + "\n.fi")
        else:
            out.append(roff(" ".join(line.strip() for line in block.splitlines())))
    return "\n.PP\n".join(part for part in out if part)


def options(ctx: click.Context, command: click.Command) -> str:
    out = []
    for param in command.get_params(ctx):
        # Arguments are in the synopsis; click gives them no help text.
        if not isinstance(param, click.Option):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out.append(f".TP\n\\fB{roff(names)}\\fR\n{roff(help_text) if help_text else ''}")
    return "\n".join(out)


def page(name: str, group: click.Group, version: str, date: str) -> str:
    ctx = click.Context(group, info_name=name, **group.context_settings)
    summary = group.get_short_help_str(limit=200).rstrip(".").removeprefix(f"{name}: ")
    parts = [
        f'.TH {name.upper()} 1 "{date}" "ollamad {version}" "User Commands"',
        f".SH NAME\n{name} \\- {roff(summary[:1].lower() + summary[1:])}",
        f".SH SYNOPSIS\n.B {name}\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        f".SH DESCRIPTION\n{paragraphs(group.help or '')}",
        f".SH OPTIONS\n{options(ctx, group)}",
        ".SH COMMANDS",
    ]
    for sub_name in group.list_commands(ctx):
        command = group.get_command(ctx, sub_name)
        if command is None or command.hidden:
            continue
        sub_ctx = click.Context(command, info_name=sub_name, parent=ctx, **command.context_settings)
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        parts.append(f'.SS "{name} {roff(sub_name)} {roff(usage)}"\n'
                     f"{paragraphs(command.help or '')}")
        if listed := options(sub_ctx, command):
            parts.append(listed)
    parts.append(EXTRA[name])
    return "\n".join(parts).rstrip("\n") + "\n"


def main(outdir: Path) -> None:
    from ollamactl.cli import main as ollamactl_main
    from ollamad import __version__
    from ollamad.cli import main as ollamad_main

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    outdir.mkdir(parents=True, exist_ok=True)
    for name, group in (("ollamad", ollamad_main), ("ollamactl", ollamactl_main)):
        (outdir / f"{name}.1").write_text(page(name, group, __version__, date))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
