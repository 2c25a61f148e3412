"""The interactive chat of ``ollamactl run``: Ollama's prompt, commands and messages."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ollamactl import render
from ollamactl.client import Client, RequestFailed
from ollamactl.create import save_model
from ollamactl.help import USAGE, USAGE_PARAMETERS, USAGE_SET, USAGE_SHORTCUTS, USAGE_SHOW
from ollamactl.history import History
from ollamactl.session import Session

PROMPT, CONTINUATION = ">>> ", "... "
QUOTES = '"""'


class Composer:
    """Multi-line input: a block opened by \"\"\" runs to the line that ends with \"\"\"."""

    def __init__(self) -> None:
        self.kind: str | None = None  # "prompt" or "system" while a block is open
        self._parts: list[str] = []

    @property
    def open(self) -> bool:
        return self.kind is not None

    def start(self, kind: str, first: str) -> str | None:
        """Begin a block with the text after its opening quotes; the text if it closes at once."""
        text, closed = _cut_suffix(first)
        if closed:
            return text
        self.kind, self._parts = kind, [text, "\n"]
        return None

    def add(self, line: str) -> str | None:
        """One more line of the open block; the whole text once the block closes."""
        before, closed = _cut_suffix(line)
        self._parts.append(before)
        if not closed:
            self._parts.append("\n")
            return None
        text = "".join(self._parts)
        self.reset()
        return text

    def reset(self) -> None:
        self.kind, self._parts = None, []


def _cut_suffix(line: str) -> tuple[str, bool]:
    return (line[:-len(QUOTES)], True) if line.endswith(QUOTES) else (line, False)


def set_parameter(options: dict[str, Any], name: str, values: list[str]) -> str:
    """``/set parameter``: store the typed value; what to print (Ollama's wording)."""
    from ollamad.errors import OllamadError
    from ollamad.options import parse_parameter
    from ollamad.store.modelfile import go_quote

    try:
        options[name] = parse_parameter(name, values)
    except OllamadError as exc:
        return f"Couldn't set parameter: {go_quote(exc.message)}"
    return f"Set parameter '{name}' to '{', '.join(values)}'"


def show_parameters(model_parameters: str, options: dict[str, Any]) -> str:
    """``/show parameters``: the model's, then those set in this session."""
    from ollamad.store.modelfile import go_value

    out = ["Model defined parameters:"]
    if not model_parameters:
        out.append("  No additional parameters were specified for this model.")
    else:
        out += [f"  {line}" for line in model_parameters.split("\n")]
    out.append("")
    if options:
        out.append("User defined parameters:")
        out += [f"  {name:<30} {go_value(value)}" for name, value in options.items()]
        out.append("")
    return "\n".join(out) + "\n"


class LineReader:
    """Lines from the terminal through GNU readline, with Ollama's history file."""

    def __init__(self, history: History) -> None:
        import readline

        self.history = history
        self._readline = readline
        readline.set_auto_history(False)
        readline.clear_history()
        # Tab inserts, as in Ollama; there is nothing to complete.
        readline.parse_and_bind("tab: tab-insert")
        for entry in history.entries:
            readline.add_history(entry)

    def read(self, continuation: bool) -> str:
        line = input(CONTINUATION if continuation else PROMPT)
        if line:
            self.history.add(line)
            self._readline.add_history(line)
            while self._readline.get_current_history_length() > self.history.limit:
                self._readline.remove_history_item(0)
        return line


class Repl:
    def __init__(self, session: Session, reader: LineReader) -> None:
        self.session = session
        self.reader = reader
        self.composer = Composer()
        self.commands: dict[str, Callable[[list[str]], bool]] = {
            "/list": self._list, "/load": self._load, "/save": self._save, "/clear": self._clear,
            "/set": self._set, "/show": self._show, "/help": self._help, "/?": self._help,
            "/exit": self._bye, "/bye": self._bye,
        }

    def loop(self) -> None:
        while True:
            try:
                line = self.reader.read(self.composer.open)
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print("\nUse Ctrl + d or /bye to exit.")
                self.composer.reset()
                continue
            try:
                if not self.handle(line):
                    return
            except KeyboardInterrupt:
                # Ctrl-C during a command (a save, a load) abandons it, not the session.
                print()

    def handle(self, line: str) -> bool:
        """Act on one line; False to leave the REPL."""
        if self.composer.open:
            kind = self.composer.kind
            text = self.composer.add(line)
            if text is not None and kind == "system":
                self._set_system(text)
            elif text:
                self.send(text)
            return True
        if line.startswith(QUOTES):
            text = self.composer.start("prompt", line[len(QUOTES):])
            if text:
                self.send(text)
            return True
        if line.startswith("/"):
            # Ollama matches commands by prefix: "/byebye" leaves too.
            for name, command in self.commands.items():
                if line.startswith(name):
                    return command(line.split())
            print(f"Unknown command '{line.split()[0]}'. Type /? for help")
            return True
        if line:
            self.send(line)
        return True

    # -- chat -------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        session = self.session
        session.messages.append({"role": "user", "content": text})
        try:
            reply = session.reply("chat", session.chat_request())
        except RequestFailed as exc:
            # Unlike Ollama, which leaves the REPL here, keep the conversation going.
            session.messages.pop()
            print(f"Error: {exc}")
            return
        if reply is None:
            return
        print("\n")
        session.summary(reply)
        message = {"role": reply.role, "content": reply.content}
        if reply.thinking:
            message["thinking"] = reply.thinking
        session.messages.append(message)

    # -- commands ---------------------------------------------------------------------------

    def _list(self, args: list[str]) -> bool:
        with Client() as client:
            models = client.call("list")["models"]
        sys.stdout.write(render.model_list(models, args[1] if len(args) > 1 else ""))
        return True

    def _load(self, args: list[str]) -> bool:
        if len(args) != 2:
            print("Usage:\n  /load <modelname>")
            return True
        name = args[1]
        print(f"Loading model '{name}'")
        try:
            with Client() as client:
                info = client.call("show", {"model": name})
        except RequestFailed as exc:
            if exc.code != "not_found":
                raise
            print(f"Couldn't find model '{name}'")
            return True
        session = self.session
        session.model, session.messages = name, []
        session.apply_show(info)
        session.preload()
        return True

    def _save(self, args: list[str]) -> bool:
        if len(args) != 2:
            print("Usage:\n  /save <modelname>")
            return True
        try:
            save_model(self.session.save_request(args[1]))
        except RequestFailed as exc:
            if "invalid model name" in str(exc):
                print(f"error: The model name '{args[1]}' is invalid")
            else:
                print(f"Error: {exc}")
            return True
        print(f"Created new model '{args[1]}'")
        return True

    def _clear(self, args: list[str]) -> bool:
        session = self.session
        session.messages = []
        if session.system:
            session.messages.append({"role": "system", "content": session.system})
        print("Cleared session context")
        return True

    def _bye(self, args: list[str]) -> bool:
        return False

    def _help(self, args: list[str]) -> bool:
        if len(args) == 1:
            sys.stderr.write(USAGE)
        else:
            topics = {"set": USAGE_SET, "/set": USAGE_SET, "show": USAGE_SHOW,
                      "/show": USAGE_SHOW, "shortcut": USAGE_SHORTCUTS,
                      "shortcuts": USAGE_SHORTCUTS}
            sys.stderr.write(topics.get(args[1], ""))
        return True

    def _set(self, args: list[str]) -> bool:
        session = self.session
        if len(args) < 2:
            sys.stderr.write(USAGE_SET)
            return True
        what = args[1]
        modes: dict[str, Callable[[], None]] = {
            "history": lambda: setattr(self.reader.history, "enabled", True),
            "nohistory": lambda: setattr(self.reader.history, "enabled", False),
            "wordwrap": lambda: setattr(session, "word_wrap", True),
            "nowordwrap": lambda: setattr(session, "word_wrap", False),
            "verbose": lambda: setattr(session, "verbose", True),
            "quiet": lambda: setattr(session, "verbose", False),
        }
        if what in modes:
            modes[what]()
            if what not in ("history", "nohistory"):
                print(f"Set '{what}' mode.")
        elif what in ("think", "nothink"):
            level = args[2] if what == "think" and len(args) > 2 else None
            session.think = level or what == "think"
            self._warn_without_thinking()
            print(f"Set 'think' mode to '{level}'." if level else f"Set '{what}' mode.")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                print("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                session.format = "json"
                print("Set format to 'json' mode.")
        elif what == "noformat":
            session.format = ""
            print("Disabled format.")
        elif what == "parameter":
            if len(args) < 4:
                sys.stderr.write(USAGE_PARAMETERS)
            else:
                print(set_parameter(session.options, args[2], args[3:]))
        elif what == "system":
            self._set_system_command(args)
        else:
            print(f"Unknown command '/set {what}'. Type /? for help")
        return True

    def _set_system_command(self, args: list[str]) -> None:
        if len(args) < 3:
            sys.stderr.write(USAGE_SET)
            return
        text = " ".join(args[2:])
        if text.startswith(QUOTES):
            text = self.composer.start("system", text[len(QUOTES):])
            if text is None:
                return
        self._set_system(text)

    def _set_system(self, text: str) -> None:
        session = self.session
        session.system = text
        message = {"role": "system", "content": text}
        if session.messages and session.messages[-1]["role"] == "system":
            session.messages[-1] = message
        else:
            session.messages.append(message)
        print("Set system message.")

    def _warn_without_thinking(self) -> None:
        try:
            with Client() as client:
                info = client.call("show", {"model": self.session.model})
        except RequestFailed:
            return
        if "thinking" not in (info.get("capabilities") or []):
            sys.stderr.write(f'warning: model "{self.session.model}" does not support thinking '
                             "output\n")

    def _show(self, args: list[str]) -> bool:
        if len(args) < 2:
            sys.stderr.write(USAGE_SHOW)
            return True
        session = self.session
        request: dict[str, Any] = {"model": session.model}
        if session.system:
            request["system"] = session.system
        if session.options:
            request["options"] = session.options
        try:
            with Client() as client:
                info = client.call("show", request)
        except RequestFailed:
            print("error: couldn't get model")
            return True
        what = args[1]
        if what == "info":
            sys.stderr.write(render.show_summary(info))
        elif what == "license":
            print(info.get("license") or "No license was specified for this model.")
        elif what == "modelfile":
            print(info.get("modelfile", ""))
        elif what == "parameters":
            sys.stdout.write(show_parameters(info.get("parameters", ""), session.options))
        elif what == "system":
            system = session.system or info.get("system", "")
            print(system + "\n" if system else "No system message was specified for this model.")
        elif what == "template":
            print(info.get("template") or "No prompt template was specified for this model.")
        else:
            print(f"Unknown command '/show {what}'. Type /? for help")
        return True


def interact(session: Session, history_path: Path, history_enabled: bool) -> None:
    history = History.load(history_path, history_enabled)
    Repl(session, LineReader(history)).loop()
