"""ollamactl's pure parts: output formats, multi-line input, /set, history rules, progress."""

from __future__ import annotations

import io
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from ollamactl import render
from ollamactl.client import RequestFailed
from ollamactl.create import CreateError, _Sender, read_modelfile, weights_file
from ollamactl.display import ReplyPrinter, WordWrap, text_width
from ollamactl.history import History
from ollamactl.progress import Bar, Progress
from ollamactl.repl import Composer, Repl, set_parameter, show_parameters
from ollamactl.run import read_prompt
from ollamactl.session import Session, print_conversation

# -- --verbose timings ----------------------------------------------------------------------------


@pytest.mark.parametrize(("nanoseconds", "text"), [
    (0, "0s"), (999, "999ns"), (1_500, "1.5µs"), (12_345_678, "12.345678ms"),
    (1_000_000_000, "1s"), (1_234_567_891, "1.234567891s"), (61_500_000_000, "1m1.5s"),
    (3_600_000_000_000, "1h0m0s"), (3_723_004_000_000, "1h2m3.004s"), (-1_500, "-1.5µs"),
])
def test_go_duration(nanoseconds: int, text: str) -> None:
    assert render.go_duration(nanoseconds) == text


def test_metrics_summary_is_ollamas() -> None:
    final = {"done": True, "total_duration": 2_000_000_000, "load_duration": 1_500_000,
             "prompt_eval_count": 26, "prompt_eval_duration": 130_000_000, "eval_count": 298,
             "eval_duration": 4_799_921_000}
    assert render.metrics_summary(final) == (
        "total duration:       2s\n"
        "load duration:        1.5ms\n"
        "prompt eval count:    26 token(s)\n"
        "prompt eval duration: 130ms\n"
        "prompt eval rate:     200.00 tokens/s\n"
        "eval count:           298 token(s)\n"
        "eval duration:        4.799921s\n"
        "eval rate:            62.08 tokens/s\n")


def test_metrics_summary_leaves_out_zeros() -> None:
    assert render.metrics_summary({"eval_count": 3}) == "eval count:           3 token(s)\n"
    assert render.metrics_summary({}) == ""


# -- ps -------------------------------------------------------------------------------------------

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def running(name: str, expires: str, size: int = 300_000_000, vram: int = 0) -> dict:
    return {"name": name, "model": name, "size": size, "size_vram": vram, "digest": "ab12" * 16,
            "expires_at": expires, "context_length": 4096, "details": {}}


def test_ps_table() -> None:
    table = render.running_models([
        running("smollm2:135m", "2026-05-01T12:04:30.123456789Z"),
        running("forever:latest", "2318-01-01T00:00:00Z", vram=300_000_000),
        running("leaving:latest", "2026-05-01T11:59:59Z", vram=100_000_000),
    ], now=NOW)
    assert table.splitlines() == [
        "NAME              ID              SIZE      PROCESSOR          CONTEXT    "
        "UNTIL              ",
        "smollm2:135m      ab12ab12ab12    300 MB    100% CPU           4096       "
        "4 minutes from now ",
        "forever:latest    ab12ab12ab12    300 MB    100% GPU           4096       "
        "Forever            ",
        "leaving:latest    ab12ab12ab12    300 MB    67%/33% CPU/GPU    4096       "
        "Stopping...        ",
    ]


def test_ps_prefix_filter_is_case_sensitive() -> None:
    models = [running("smollm2:135m", "2026-05-01T12:04:30Z")]
    assert len(render.running_models(models, "smol", now=NOW).splitlines()) == 2
    assert len(render.running_models(models, "SMOL", now=NOW).splitlines()) == 1


@pytest.mark.parametrize(("size", "vram", "text"), [
    (100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 150, "Unknown"),
    (1000, 995, "1%/99% CPU/GPU"),
    (1000, 5, "100%/0% CPU/GPU"), (200, 1, "100%/0% CPU/GPU"), (1000, 985, "2%/98% CPU/GPU"),
])
def test_processor(size: int, vram: int, text: str) -> None:
    assert render.processor(size, vram) == text


def test_zero_time_is_never() -> None:
    assert render.human_time("0001-01-01T00:00:00Z", NOW) == "Never"


# -- multi-line input -----------------------------------------------------------------------------


def test_block_closed_on_its_own_line() -> None:
    composer = Composer()
    assert composer.start("prompt", "one line") is None  # opened, not finished
    assert composer.open and composer.kind == "prompt"
    assert composer.add("second") is None
    assert composer.add('third"""') == "one line\nsecond\nthird"
    assert not composer.open


def test_block_closed_on_the_same_line() -> None:
    composer = Composer()
    assert composer.start("prompt", 'all at once"""') == "all at once"
    assert not composer.open


def test_block_closing_quotes_alone_keep_the_last_newline() -> None:
    composer = Composer()
    composer.start("prompt", "")
    composer.add("body")
    assert composer.add('"""') == "\nbody\n"


def test_reset_abandons_a_block() -> None:
    composer = Composer()
    composer.start("system", "half")
    composer.reset()
    assert not composer.open
    assert composer.start("prompt", 'fresh"""') == "fresh"


# -- /set parameter and /show parameters -----------------------------------------------------------


def test_set_parameter_types_values_as_ollama_does() -> None:
    options: dict = {}
    assert set_parameter(options, "num_ctx", ["8192"]) == "Set parameter 'num_ctx' to '8192'"
    assert set_parameter(options, "temperature", ["0.25"]) == \
        "Set parameter 'temperature' to '0.25'"
    assert set_parameter(options, "use_mmap", ["false"]) == "Set parameter 'use_mmap' to 'false'"
    assert set_parameter(options, "stop", ["<|im_end|>", "User:"]) == \
        "Set parameter 'stop' to '<|im_end|>, User:'"
    assert options == {"num_ctx": 8192, "temperature": 0.25, "use_mmap": False,
                       "stop": ["<|im_end|>", "User:"]}
    assert type(options["num_ctx"]) is int


def test_set_parameter_refusals() -> None:
    options: dict = {}
    assert set_parameter(options, "bogus", ["1"]) == \
        "Couldn't set parameter: \"unknown parameter 'bogus'\""
    assert set_parameter(options, "num_ctx", ["big"]) == \
        "Couldn't set parameter: \"invalid int value [big]\""
    assert set_parameter(options, "top_p", ["x", "y"]) == \
        "Couldn't set parameter: \"invalid float value [x y]\""
    assert set_parameter(options, "use_mmap", ["maybe"]) == \
        "Couldn't set parameter: \"invalid bool value [maybe]\""
    assert options == {}


def test_show_parameters() -> None:
    model = 'stop                           "<|im_start|>"\nstop                           "x"'
    assert show_parameters(model, {"temperature": 0.5, "stop": ["a", "b"]}) == (
        "Model defined parameters:\n"
        '  stop                           "<|im_start|>"\n'
        '  stop                           "x"\n'
        "\n"
        "User defined parameters:\n"
        "  temperature                    0.5\n"
        "  stop                           [a b]\n"
        "\n")
    assert show_parameters("", {}) == ("Model defined parameters:\n"
                                       "  No additional parameters were specified for this "
                                       "model.\n\n")


# -- the REPL's own commands (those that need no daemon) -------------------------------------------


def repl(tmp_path: Path) -> Repl:
    reader = SimpleNamespace(history=History(tmp_path / "history"))
    return Repl(Session("smollm2:135m"), reader)  # type: ignore[arg-type]


def test_set_system_clear_and_unknown_commands(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    chat = repl(tmp_path)
    assert chat.handle("/set system Be brief.")
    assert chat.handle("/set system    Be   briefer.")
    assert chat.session.messages == [{"role": "system", "content": "Be briefer."}]
    chat.session.messages.append({"role": "user", "content": "hi"})
    assert chat.handle('/set system """Two')
    assert chat.composer.open
    assert chat.handle('lines"""')
    assert chat.session.system == "Two\nlines"
    assert chat.handle("/clear")
    assert chat.session.messages == [{"role": "system", "content": "Two\nlines"}]
    for line in ("/set format yaml", "/set format json", "/set noformat", "/set wordwrap",
                 "/set nowordwrap", "/set verbose", "/set quiet", "/set nohistory", "/set bogus",
                 "/show", "/nope x", "/save", "/load"):
        assert chat.handle(line)
    assert not chat.reader.history.enabled
    assert not chat.handle("/bye")
    assert not chat.handle("/exit")
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "Set system message.", "Set system message.", "Set system message.",
        "Cleared session context",
        "Invalid or missing format. For 'json' mode use '/set format json'",
        "Set format to 'json' mode.", "Disabled format.", "Set 'wordwrap' mode.",
        "Set 'nowordwrap' mode.", "Set 'verbose' mode.", "Set 'quiet' mode.",
        "Unknown command '/set bogus'. Type /? for help",
        "Unknown command '/nope'. Type /? for help",
        "Usage:", "  /save <modelname>", "Usage:", "  /load <modelname>",
    ]
    assert out.err.startswith("Available Commands:\n  /show info ")


def test_session_requests_leave_unset_fields_out() -> None:
    session = Session("m", loaded_messages=[{"role": "user", "content": "old"}])
    assert session.chat_request() == {"model": "m", "messages": []}
    session.messages = [{"role": "user", "content": "new"}]
    session.options, session.format, session.keep_alive, session.think = \
        {"seed": 1}, "json", "10m", False
    assert session.chat_request() == {"model": "m", "messages": session.messages,
                                      "format": "json", "options": {"seed": 1},
                                      "keep_alive": "10m", "think": False}
    session.system = "sys"
    assert session.save_request("copy") == {
        "model": "copy", "from": "m", "system": "sys", "parameters": {"seed": 1},
        "messages": [{"role": "user", "content": "old"}, {"role": "user", "content": "new"}]}


# -- history --------------------------------------------------------------------------------------


def test_history_file_rules(tmp_path: Path) -> None:
    path = tmp_path / ".ollama" / "history"
    history = History.load(path)
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    for index in range(105):
        history.add(f"line {index}")
    lines = path.read_text().splitlines()
    assert len(lines) == 100 and lines[0] == "line 5" and lines[-1] == "line 104"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name("history.tmp").exists()


def test_history_load_skips_blank_and_unfinished_lines(tmp_path: Path) -> None:
    path = tmp_path / "history"
    path.write_text("  first  \n\n   \nsecond\nunfinished")
    assert History.load(path).entries == ["first", "second"]


def test_disabled_history_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history"
    path.write_text("kept\n")
    history = History.load(path, enabled=False)
    history.add("secret")
    assert path.read_text() == "kept\n"
    assert history.entries == ["kept", "secret"]  # still there for the arrow keys
    history.enabled = True
    history.add("public")
    assert path.read_text() == "kept\nsecret\npublic\n"


def test_history_mode_when_umask_is_open(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        History.load(tmp_path / "history").add("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "history").stat().st_mode) == 0o600


# -- word wrap and reply output --------------------------------------------------------------------


def test_word_wrap_moves_the_last_word_down() -> None:
    wrap = WordWrap()
    out = wrap.render("The capital of France is Paris.", 20)
    # 15 columns fit (width - 5); the word being written when the line fills moves down.
    assert out == "The capital of \033[K\nFrance is Paris\033[5D\033[K\nParis."


def test_word_wrap_state_spans_chunks() -> None:
    whole = WordWrap().render("alpha beta gamma delta", 20)
    wrap = WordWrap()
    assert "".join(wrap.render(piece, 20) for piece in ("alp", "ha be", "ta gam", "ma delta")) \
        == whole


def test_no_wrap_on_narrow_or_unknown_terminals() -> None:
    assert WordWrap().render("x " * 50, 9) == "x " * 50


def test_wide_characters_count_twice() -> None:
    assert text_width("日本語") == 6
    assert text_width("e\u0301") == 1


def test_reply_printer_thinking_then_content() -> None:
    out = io.StringIO()
    printer = ReplyPrinter(out, plain=True)
    printer.feed("", "Let me think.", [])
    printer.feed("Answer.", "", [])
    printer.feed("", "", [{"function": {"name": "f", "arguments": {"a": "<b>"}}}])
    assert out.getvalue() == ("Thinking...\nLet me think.\n...done thinking.\n\nAnswer."
                              "  Model called a non-existent function 'f()' with arguments: "
                              '{"a":"\\u003cb\\u003e"}')
    assert printer.reply.content == "Answer." and printer.reply.thinking == "Let me think."


# -- progress -------------------------------------------------------------------------------------


def test_bar_line() -> None:
    # 80 columns: the bar gets what the text around it leaves (80 - 26 - 31 - 5).
    assert Bar("pulling dde5aa3fc5ff:", 2_000_000_000, 2_000_000_000).line(80) == (
        "pulling dde5aa3fc5ff: 100% ▕" + "█" * 18 + "▏   2 GB" + " " * 25)
    half = Bar("pulling x:", 100_000_000, 50_000_000).line(80)
    assert half.startswith("pulling x:  50% ▕") and " 50 MB/100 MB" in half


def test_progress_without_a_terminal_prints_each_line_once() -> None:
    out = io.StringIO()
    with Progress(out) as progress:
        for event in ({"status": "pulling manifest"},
                      {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 10},
                      {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 10,
                       "completed": 4},
                      {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 10,
                       "completed": 10},
                      {"status": "verifying sha256 digest"}, {"status": "verifying sha256 digest"},
                      {"status": "success"}):
            progress.pull_event(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[1].startswith("pulling aaaaaaaaaaaa: 100% ▕")
    assert lines[2:] == ["verifying sha256 digest", "success"]


def test_create_events_name_bars_by_status() -> None:
    out = io.StringIO()
    with Progress(out) as progress:
        progress.create_event({"status": "parsing GGUF"})
        progress.create_event({"status": "validating GGUF model", "digest": "0" * 19,
                               "total": 5, "completed": 5})
    assert out.getvalue().splitlines()[1].startswith("validating GGUF model 100% ▕")


# -- create: what the client reads and sends -------------------------------------------------------


def test_missing_default_modelfile_means_from_here(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert read_modelfile(None) == (b"FROM .\n", tmp_path)
    with pytest.raises(CreateError, match="specified Modelfile wasn't found"):
        read_modelfile(tmp_path / "missing")
    (tmp_path / "Modelfile").write_bytes(b"FROM x\n")
    assert read_modelfile(None) == (b"FROM x\n", tmp_path)


def test_weights_file(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    assert weights_file(tmp_path) == tmp_path / "a.gguf"
    assert weights_file(tmp_path / "a.gguf") == tmp_path / "a.gguf"
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(CreateError, match="several weight files"):
        weights_file(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CreateError, match="no Modelfile or safetensors files found"):
        weights_file(empty)


class BlobClient:
    """Stands in for the daemon's ``blob``: records what it was handed."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def call(self, op: str, args: dict, files: list[int]) -> dict:
        assert op == "blob" and len(files) == 1
        self.received.append(os.read(files[0], 100))
        return {"digest": f"sha256:{len(self.received):064x}"}


def test_files_are_sent_open_and_named_by_their_own_name(tmp_path: Path) -> None:
    from ollamad.store.modelfile import parse, to_create_request

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.gguf").write_bytes(b"GGUF-model")
    (tmp_path / "lora.gguf").write_bytes(b"GGUF-lora")
    client = BlobClient()
    sender = _Sender(client, Progress(io.StringIO()), tmp_path)  # type: ignore[arg-type]
    commands = parse("FROM ./weights\nADAPTER lora.gguf\nFROM llama3.2\n")
    request = to_create_request(commands, resolve_file=sender)
    sender.rename(request)
    assert client.received == [b"GGUF-model", b"GGUF-lora"]
    assert request["from"] == "llama3.2"
    assert request["files"] == {"model.gguf": f"sha256:{1:064x}"}
    assert request["adapters"] == {"lora.gguf": f"sha256:{2:064x}"}


# -- run: prompt, replayed conversation, daemon capabilities ---------------------------------------


def test_piped_stdin_comes_first_and_means_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("piped text\n"))
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert read_prompt(("summarise", "this")) == ("piped text\n summarise this", False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert read_prompt(()) == ("", False)


def test_stored_conversation_is_replayed_as_ollama_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    print_conversation([{"role": "system", "content": "hidden"},
                        {"role": "user", "content": "Hi?"},
                        {"role": "assistant", "content": "Hello."}], word_wrap=True)
    assert capsys.readouterr().out == ">>> Hi?\nHello.\n\n"


def test_unknown_operation_is_recognised() -> None:
    assert RequestFailed("bad_request", "unknown operation 'pull'").unsupported
    assert not RequestFailed("bad_request", "invalid model name").unsupported
    assert not RequestFailed("not_found", "unknown operation").unsupported
