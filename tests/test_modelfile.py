"""The Modelfile parser and create translation, against the cases of Ollama's parser tests."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from ollamad import model_info
from ollamad.errors import BadRequest
from ollamad.store import ModelName, ModelStore
from ollamad.store.modelfile import (
    Command,
    Modelfile,
    ModelfileError,
    expand_path,
    parse,
    to_create_request,
)
from tests.ollama_layout import LICENSE, PARAMS, SYSTEM, TEMPLATE, write_ollama_model

BAD_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", '
               '"draft", "renderer", "parser", "parameter", "message", or "requires"')
BAD_ROLE = 'message role must be one of "system", "user", or "assistant"'
LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
    "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}"
    "<|eot_id|>")


def commands(text: str | bytes) -> list[tuple[str, str]]:
    return [(command.name, command.args) for command in parse(text).commands]


def parse_error(text: str | bytes) -> str:
    with pytest.raises(ModelfileError) as caught:
        parse(text)
    return caught.value.message


# -- lexing ---------------------------------------------------------------------------------------

def test_parse_every_kind_of_line() -> None:
    text = ("\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\n"
            f'PARAMETER param2 value2\nTEMPLATE """{LLAMA3_TEMPLATE}"""    \n')
    assert commands(text) == [("model", "model1"), ("adapter", "adapter1"), ("license", "MIT"),
                              ("param1", "value1"), ("param2", "value2"),
                              ("template", LLAMA3_TEMPLATE)]


def test_values_are_trimmed_unless_quoted() -> None:
    text = ('\nFROM "     model 1"\nADAPTER      adapter3\nLICENSE "MIT       "\n'
            "PARAMETER param1        value1\nPARAMETER param2    value2\n"
            f'TEMPLATE """   {LLAMA3_TEMPLATE}   """    \n')
    assert commands(text) == [("model", "     model 1"), ("adapter", "adapter3"),
                              ("license", "MIT       "), ("param1", "value1"),
                              ("param2", "value2"), ("template", f"   {LLAMA3_TEMPLATE}   ")]


@pytest.mark.parametrize(("text", "expected"), [
    ('FROM "FOO  BAR  "', [("model", "FOO  BAR  ")]),
    ('FROM "FOO BAR"\nPARAMETER param1 value1', [("model", "FOO BAR"), ("param1", "value1")]),
    ("FROM     FOOO BAR    ", [("model", "FOOO BAR")]),
    ("FROM /what/is/the path ", [("model", "/what/is/the path")]),
    ("FROM foo", [("model", "foo")]),
    ("FROM /path/to/model/fp16.bin", [("model", "/path/to/model/fp16.bin")]),
    ("FROM llama3:7b-instruct-q4_K_M", [("model", "llama3:7b-instruct-q4_K_M")]),
    ("PARAMETER param1 value1\nFROM foo", [("param1", "value1"), ("model", "foo")]),
    ("PARAMETER what the \nFROM lemons make lemonade ",
     [("what", "the"), ("model", "lemons make lemonade")]),
])
def test_from(text: str, expected: list[tuple[str, str]]) -> None:
    assert commands(text) == expected


@pytest.mark.parametrize("text", ["", "PARAMETER param1 value1", "# FROM foo\n"])
def test_a_modelfile_needs_a_from_line(text: str) -> None:
    assert parse_error(text) == "no FROM line"


def test_instructions_are_case_insensitive_but_names_and_roles_are_not() -> None:
    assert commands("from a\nPaRaMeTeR Stop x\nmessage user hi\nSystem s\n") == [
        ("model", "a"), ("Stop", "x"), ("message", "user: hi"), ("system", "s")]
    assert parse_error("FROM foo\nMESSAGE User hi\n") == f"(line 2): {BAD_ROLE}"


def test_comments_and_indentation() -> None:
    assert commands("\n# comment\n  FROM foo # not a comment\n\t# indented comment\n\t") == [
        ("model", "foo # not a comment")]


def test_draft_renderer_parser_requires() -> None:
    assert commands("FROM base\nDRAFT ./assistant\nRENDERER r1\nPARSER p1\nREQUIRES 0.14.0\n") == [
        ("model", "base"), ("draft", "./assistant"), ("renderer", "r1"), ("parser", "p1"),
        ("requires", "0.14.0")]


def test_an_unknown_instruction_is_reported_with_its_line() -> None:
    assert parse_error("\nFROM foo\nBADCOMMAND param1 value1\n") == f"(line 3): {BAD_COMMAND}"
    # An instruction must be letters followed by a blank.
    assert parse_error("FROM foo\nSYSTEM2 x\n") == f"(line 2): {BAD_COMMAND}"
    # Ollama counts CR and LF each as a line end, so CRLF files report twice the line.
    assert parse_error("FROM foo\r\nBAD x\r\n") == f"(line 3): {BAD_COMMAND}"


@pytest.mark.parametrize(("text", "message"), [
    ("\nFROM foo\nPARAMETER param1\n", "unexpected EOF: param1"),
    ("\nFROM foo\nPARAMETER param1", "unexpected EOF"),
    ("\nFROM foo\nPARAMETER bad-name 1\n", "unexpected EOF: bad"),
    ("\nFROM foo\nMESSAGE system\n", "unexpected EOF: system"),
    ("\nFROM foo\nMESSAGE system", "unexpected EOF"),
    ("FROM", "unexpected EOF"),
])
def test_a_line_cut_short_is_an_unexpected_eof(text: str, message: str) -> None:
    assert parse_error(text) == message


@pytest.mark.parametrize(("text", "expected"), [
    ("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n",
     ["system: You are a file parser. Always parse things."]),
    ("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.",
     ["system: You are a file parser. Always parse things."]),
    ("\nFROM foo\nMESSAGE system You are a file parser.\nMESSAGE user Hey there!\n"
     "MESSAGE assistant Hello, I want to parse all the things!\n",
     ["system: You are a file parser.", "user: Hey there!",
      "assistant: Hello, I want to parse all the things!"]),
    ('\nFROM foo\nMESSAGE system """\nYou are a multiline file parser.\n"""\n\t\t\t',
     ["system: \nYou are a multiline file parser.\n"]),
])
def test_messages(text: str, expected: list[str]) -> None:
    assert commands(text) == [("model", "foo")] + [("message", args) for args in expected]


def test_a_message_role_must_be_known() -> None:
    assert parse_error("\nFROM foo\nMESSAGE badguy I'm a bad guy!\n") == f"(line 3): {BAD_ROLE}"


@pytest.mark.parametrize(("value", "expected"), [
    ('"""\nThis is a\nmultiline system.\n"""\n\t\t\t', "\nThis is a\nmultiline system.\n"),
    ('"""\nThis is a\nmultiline system."""\n\t\t\t', "\nThis is a\nmultiline system."),
    ('"""This is a\nmultiline system."""\n\t\t\t', "This is a\nmultiline system."),
    ('"""This is a multiline system."""\n\t\t\t', "This is a multiline system."),
    ('"""\nThis is a multiline system with "quotes".\n"""\n',
     '\nThis is a multiline system with "quotes".\n'),
    ('""""""\n', ""),
    ('""\n', ""),
    ('"\'"\n', "'"),
    ('"""\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n', '\'\'"\'""\'""\'"\'\'\'\'\'""\'""\''),
    ('"two\nlines"', "two\nlines"),
    # No escapes: a backslash is itself.
    ('"a\\"', "a\\"),
])
def test_quoted_values(value: str, expected: str) -> None:
    assert commands(f"\nFROM foo\nSYSTEM {value}") == [("model", "foo"), ("system", expected)]


@pytest.mark.parametrize("value", ['"""This is a multiline system.""\n\t\t\t', '"\n\t\t\t',
                                   '"quoted" then more\n'])
def test_an_unclosed_quote_is_an_unexpected_eof(value: str) -> None:
    assert parse_error(f"\nFROM foo\nSYSTEM {value}") == "unexpected EOF"


def test_a_quoted_value_ends_at_the_first_line_that_closes_it() -> None:
    assert commands('FROM foo\nSYSTEM "a\nb"\nTEMPLATE t\n') == [
        ("model", "foo"), ("system", "a\nb"), ("template", "t")]


@pytest.mark.parametrize(("line", "name", "value"), [
    ("numa true", "numa", "true"),
    ("num_ctx 1", "num_ctx", "1"),
    ("top_p 1.0", "top_p", "1.0"),
    ("min_p 0.05", "min_p", "0.05"),
    ("penalize_newline true", "penalize_newline", "true"),
    ("stop ### User:", "stop", "### User:"),
    ("stop ### User: ", "stop", "### User:"),
    ('stop "### User:"', "stop", "### User:"),
    ('stop "### User: "', "stop", "### User: "),
    ('stop """### User:"""', "stop", "### User:"),
    ('stop """### User:\n"""', "stop", "### User:\n"),
    ("stop <|endoftext|>", "stop", "<|endoftext|>"),
    ("stop </s>", "stop", "</s>"),
])
def test_parameters(line: str, name: str, value: str) -> None:
    assert commands(f"FROM foo\nPARAMETER {line}\n") == [("model", "foo"), (name, value)]


def test_unprintable_characters_are_dropped_but_blanks_inside_values_kept() -> None:
    assert commands("\x01FROM foo\nSYSTEM a\x01b\u200bc\u00a0d\te  f\n") == [
        ("model", "foo"), ("system", "abcd\te  f")]


# -- encodings ------------------------------------------------------------------------------------

UTF16_TEXT = "FROM bob\nPARAMETER param1 1\nPARAMETER param2 4096\nSYSTEM You are a utf16 file.\n"
UTF16_COMMANDS = [("model", "bob"), ("param1", "1"), ("param2", "4096"),
                  ("system", "You are a utf16 file.")]


@pytest.mark.parametrize("encoded", [
    b"\xff\xfe" + UTF16_TEXT.encode("utf-16-le"),
    b"\xfe\xff" + UTF16_TEXT.encode("utf-16-be"),
    b"\xef\xbb\xbf" + UTF16_TEXT.encode(),
    UTF16_TEXT.encode(),
    "\ufeff" + UTF16_TEXT,
])
def test_byte_order_marks(encoded: str | bytes) -> None:
    assert commands(encoded) == UTF16_COMMANDS


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])  # Python's utf-16 writes a BOM
def test_multibyte_text(encoding: str) -> None:
    text = "FROM test\n\tSYSTEM 你好👋"
    assert commands(text.encode(encoding)) == [("model", "test"), ("system", "你好👋")]


# -- rendering round trip -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\n"
    "TEMPLATE template1\nMESSAGE system You are a file parser. Always parse things.\n"
    "MESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
    '\nFROM foo\nLICENSE """\nVery long and boring legal text.\nBlah blah blah.\n'
    '"Oh look, a quote!"\n"""\n\nPARAMETER param1 value1\nMESSAGE system """\n'
    'You are a store greeter. Always respond with "Hello!".\n"""\nMESSAGE user Hey there!\n',
    '\nFROM foo\nSYSTEM ""\n',
    'FROM foo\nSYSTEM " padded "\nMESSAGE user a: b\nPARAMETER stop "\n"\n',
])
def test_parsing_what_was_rendered_gives_the_same_commands(text: str) -> None:
    modelfile = parse(text)
    assert parse(modelfile.render()) == modelfile


def test_show_modelfile_parses_back_into_the_model(tmp_path: Path, smollm2_gguf: Path) -> None:
    write_ollama_model(tmp_path / "models", smollm2_gguf)
    store = ModelStore(tmp_path / "models")
    stored = store.get(ModelName.parse("smollm2:135m"))
    shown = model_info.show(store, stored, verbose=False, system="", options={})

    def resolve(text: str) -> str | None:
        path = Path(text)
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() \
            else None

    request = to_create_request(parse(shown["modelfile"]), resolve_file=resolve)
    weights = stored.manifest.layers[0].digest
    assert request == {
        "files": {f"sha256-{weights.hex}": str(weights)},
        "template": TEMPLATE,
        "license": [LICENSE],
        "system": SYSTEM,
        "parameters": PARAMS,
    }
    messages = [("user", "hi"), ("assistant", "hello\nthere")]
    rendered = Modelfile.of_model(model="m", template=TEMPLATE, messages=messages).render()
    assert to_create_request(parse(rendered), resolve_file=lambda _: None)["messages"] == [
        {"role": role, "content": content} for role, content in messages]


# -- create request -------------------------------------------------------------------------------

def request(text: str, files: dict[str, str] | None = None) -> dict[str, object]:
    return to_create_request(parse(text), resolve_file=(files or {}).get)


def request_error(text: str, files: dict[str, str] | None = None) -> str:
    with pytest.raises(ModelfileError) as caught:
        request(text, files)
    return caught.value.message


def test_create_requests_like_ollamas() -> None:
    assert request("FROM test") == {"from": "test"}
    assert request("FROM test\nTEMPLATE some template\n") == {
        "from": "test", "template": "some template"}
    assert request("FROM test\nPARAMETER temperature 0.5\nPARAMETER top_k 1\n"
                   "SYSTEM You are a bot.\nLICENSE license1\nLICENSE license2\n"
                   "MESSAGE user Hello there!\nMESSAGE assistant Hi! How are you?\n") == {
        "from": "test", "license": ["license1", "license2"], "system": "You are a bot.",
        "parameters": {"temperature": 0.5, "top_k": 1},
        "messages": [{"role": "user", "content": "Hello there!"},
                     {"role": "assistant", "content": "Hi! How are you?"}]}


def test_fields_come_in_ollamas_order_and_empty_ones_are_left_out() -> None:
    created = request("PARSER p\nRENDERER r\nMESSAGE user u\nPARAMETER seed 1\nSYSTEM s\n"
                      "LICENSE l\nTEMPLATE t\nADAPTER a.gguf\nFROM /w/model.gguf\nSYSTEM \"\"\n"
                      "REQUIRES 1.2\n",
                      {"/w/model.gguf": "sha256:1", "a.gguf": "sha256:2"})
    assert list(created) == ["files", "adapters", "template", "license", "parameters",
                             "messages", "renderer", "parser", "requires"]


def test_parameters_are_typed_and_stop_lines_gather() -> None:
    assert request("FROM m\nPARAMETER stop <a>\nPARAMETER num_ctx 8\nPARAMETER stop \"b \"\n"
                   "PARAMETER num_ctx 16\nPARAMETER use_mmap false\n")["parameters"] == {
        "stop": ["<a>", "b "], "num_ctx": 16, "use_mmap": False}


@pytest.mark.parametrize(("line", "message"), [
    ("temperature hot", "invalid float value [hot]"),
    ("num_ctx 1.5", "invalid int value [1.5]"),
    ("use_mmap maybe", "invalid bool value [maybe]"),
    ("foo 1", "unknown parameter 'foo'"),
])
def test_bad_parameters(line: str, message: str) -> None:
    assert request_error(f"FROM m\nPARAMETER {line}\n") == message


def test_deprecated_parameters_are_dropped_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert request("FROM m\nPARAMETER numa true\nPARAMETER seed 3\n")["parameters"] == {
            "seed": 3}
    assert "parameter numa is deprecated" in caplog.text


@pytest.mark.parametrize(("version", "stored"), [
    ("0.14.0", "0.14.0"), ("v0.14.0", "0.14.0"), ("1", "1"), ("1.2", "1.2"),
    ("1.2.3-rc.1+build.01", "1.2.3-rc.1+build.01"),
])
def test_requires_is_a_semver_stored_without_v(version: str, stored: str) -> None:
    assert request(f"FROM m\nREQUIRES {version}\n")["requires"] == stored


@pytest.mark.parametrize("version", ["01.2.3", "1.2-rc", "1.2.3-01", "vv1", "latest", "1.2.3."])
def test_requires_must_be_a_semver(version: str) -> None:
    assert request_error(f"FROM m\nREQUIRES {version}\n") == \
        "requires must be a valid semver (e.g. 0.14.0)"


def test_local_files_are_keyed_by_base_name() -> None:
    files = {"./model.gguf": "sha256:1", "/abs/proj.gguf": "sha256:2", "k.gguf": "sha256:3",
             "~/l.gguf": "sha256:4"}
    # Each ADAPTER line replaces the one before, as in Ollama.
    assert request("FROM ./model.gguf\nFROM /abs/proj.gguf\nADAPTER k.gguf\nADAPTER ~/l.gguf\n",
                   files) == {"files": {"model.gguf": "sha256:1", "proj.gguf": "sha256:2"},
                              "adapters": {"l.gguf": "sha256:4"}}
    assert request("FROM base:latest\nDRAFT d.gguf\n", {"d.gguf": "sha256:4"}) == {
        "from": "base:latest", "draft_files": {"d.gguf": "sha256:4"}}


def test_file_errors() -> None:
    assert request_error("FROM m\nADAPTER gone.gguf\n") == \
        "ADAPTER gone.gguf: no such file or directory"
    assert request_error("FROM m\nDRAFT gone.gguf\n") == \
        "DRAFT gone.gguf: no such file or directory"
    same = {"a.gguf": "sha256:1", "b.gguf": "sha256:1"}
    assert request_error("FROM a.gguf\nDRAFT b.gguf\n", same) == \
        "DRAFT must not reference the same local path as FROM: b.gguf"
    assert request_error("FROM /x/m.gguf\nFROM /y/m.gguf\n",
                         {"/x/m.gguf": "sha256:1", "/y/m.gguf": "sha256:2"}) == \
        "two different files are named m.gguf"


def test_errors_are_bad_requests() -> None:
    assert issubclass(ModelfileError, BadRequest)
    assert ModelfileError("x", 4).line == 4 and ModelfileError("x", 4).message == "(line 4): x"
    assert Command("stop", "x") in parse("FROM a\nPARAMETER stop x").commands


# -- paths ----------------------------------------------------------------------------------------

HOME = Path("/home/me")
HERE = Path("/work/models")


@pytest.mark.parametrize(("text", "expected"), [
    ("/abs/../x.gguf", "/x.gguf"),
    ("//abs//x.gguf", "/abs/x.gguf"),
    ("~", "/home/me"),
    ("~/m/./x.gguf", "/home/me/m/x.gguf"),
    ("~bob", "/users/bob"),
    ("~bob/x.gguf", "/users/bob/x.gguf"),
    ("x.gguf", "/work/models/x.gguf"),
    ("../other/./x.gguf", "/work/other/x.gguf"),
    (".", "/work/models"),
])
def test_expand_path(text: str, expected: str) -> None:
    homes = {"bob": Path("/users/bob")}
    assert expand_path(text, HERE, HOME, user_home=homes.get) == Path(expected)


def test_expand_path_of_an_unknown_user() -> None:
    with pytest.raises(ModelfileError, match="failed to find user 'nobody-here': user: unknown"):
        expand_path("~nobody-here/x", HERE, HOME, user_home=lambda _: None)
