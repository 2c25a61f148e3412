"""Property tests of every parser that reads what a client, a registry or a model file sends.

The property is the same everywhere: whatever the input, only the documented error type escapes
(a crash of any other type would be a 500, a dead connection or a traceback in the journal), the
work is bounded, and where an encoder exists, decoding what it wrote gives the value back.

Bounded for the normal suite: each test runs a few hundred examples, and the deadline only
catches a hang (this machine is shared, so it is generous); the file takes well under a minute.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import tarfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ollamad import create, prompt
from ollamad import protocol as wire
from ollamad.errors import BadRequest, InvalidDigest, InvalidName
from ollamad.http import ollama_api, openai_requests
from ollamad.http.jsonbody import decode
from ollamad.http.status import HTTPProblem
from ollamad.inference import messages_arg
from ollamad.registry import archive, parts, protocol
from ollamad.registry.errors import ArchiveRefused, RegistryError
from ollamad.store import Digest, InvalidManifest, Layer, Manifest, ModelName
from ollamad.store.gguf import InvalidGGUF, read_gguf
from ollamad.store.manifests import ManifestStore, MediaType
from ollamad.store.modelfile import Command, Modelfile, ModelfileError, message_command, parse

# A hang, not slowness, is the failure: one example of any test here takes milliseconds.
FUZZ = settings(max_examples=200, deadline=timedelta(seconds=5),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- shared strategies --------------------------------------------------------------------------

# What msgpack and JSON can carry, small: the shapes clients send.
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8))
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
# Keys the code under test looks up, so that the generated values reach it.
KEYS = st.sampled_from([
    "model", "messages", "role", "content", "images", "tool_calls", "function", "name",
    "arguments", "parameters", "properties", "type", "required", "items", "enum", "anyOf",
    "thinking", "tool_name", "tool_call_id", "id", "index", "tools", "options", "stop", "format",
    "input", "prompt", "response_format", "json_schema", "schema", "image_url", "url", "text",
    "reasoning", "effort", "reasoning_effort", "logprobs", "top_logprobs", "max_tokens",
    "encoding_format", "input_audio", "data", "num_ctx", "stream", "keep_alive", "suffix",
]) | st.text(max_size=6)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(KEYS, inner, max_size=4), max_leaves=20)


def msgpack_values(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(keys, inner, max_size=3), max_leaves=12)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (positions past the end are ignored)."""
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def feed(connection: wire.ServerConnection | wire.ClientConnection, data: bytes,
         cuts: list[int]) -> None:
    """Feed ``data`` cut at ``cuts``; a ProtocolError, the one failure allowed, ends it."""
    with contextlib.suppress(wire.ProtocolError):
        for piece in split(data, cuts):
            connection.receive_data(piece)


# -- the socket protocol ------------------------------------------------------------------------


class TestProtocolCodec:
    """The daemon reads arbitrary bytes from any local client: only ProtocolError escapes, and
    what the encoder writes decodes to the same frames however the stream is cut."""

    @FUZZ
    @given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6),
           st.integers(1, 300))
    @example(b"\xc1", [], 100)  # a byte msgpack never uses
    @example(b"\x91" * 2000, [], 10_000)  # nesting deeper than the unpacker's stack
    def test_arbitrary_bytes_are_a_protocol_error_at_worst(self, data: bytes, cuts: list[int],
                                                           limit: int) -> None:
        feed(wire.ServerConnection("ollamad/fuzz", ("list",), limit), data, cuts)

    @FUZZ
    @given(st.lists(msgpack_values(st.text(max_size=4) | st.integers(-3, 3)), max_size=5),
           st.lists(st.integers(0, 200), max_size=4))
    def test_well_formed_msgpack_of_any_shape_after_hello(self, objects: list[Any],
                                                          cuts: list[int]) -> None:
        data = wire.ClientConnection("fuzz").hello() + b"".join(
            msgpack.packb(obj, use_bin_type=True) for obj in objects)
        feed(wire.ServerConnection("ollamad/fuzz", ("list",), 4096), data, cuts)
        feed(wire.ClientConnection("fuzz", 4096), data, cuts)

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(["request", "cancel"]), st.text(max_size=6),
                              msgpack_values(st.text(max_size=4))), max_size=6),
           st.lists(st.integers(0, 600), max_size=5))
    def test_client_frames_round_trip(self, specs: list[tuple[str, str, Any]],
                                      cuts: list[int]) -> None:
        frames: list[Any] = [wire.Hello(1, "fuzz/1")]
        for number, (kind, op, value) in enumerate(specs, start=1):
            frames.append(wire.Request(number, op, {"value": value}) if kind == "request"
                          else wire.Cancel(number))
        server = wire.ServerConnection("ollamad/fuzz", ("list",), 1 << 20)
        data = b"".join(wire.encode(frame) for frame in frames)
        decoded = [f for piece in split(data, cuts) for f in server.receive_data(piece)]
        assert decoded == frames
        assert server.in_flight == {f.id for f in frames if isinstance(f, wire.Request)}

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(["event", "done", "error"]),
                              st.integers(0, 2**63 - 1), msgpack_values(st.text(max_size=4))),
                    max_size=6),
           st.lists(st.integers(0, 600), max_size=5))
    def test_server_frames_round_trip(self, specs: list[tuple[str, int, Any]],
                                      cuts: list[int]) -> None:
        frames: list[Any] = [wire.ServerHello(1, "ollamad/fuzz", ("list", "show"))]
        for kind, id_, value in specs:
            frames.append(wire.Event(id_, {"value": value}) if kind == "event"
                          else wire.Done(id_) if kind == "done"
                          else wire.Error(id_, "internal", str(value)))
        client = wire.ClientConnection("fuzz", 1 << 20)
        data = b"".join(wire.encode(frame) for frame in frames)
        assert [f for piece in split(data, cuts) for f in client.receive_data(piece)] == frames


# -- names and digests --------------------------------------------------------------------------

NAME_PIECES = st.sampled_from(["a", "Z", "0", "_", "-", ".", "..", "/", ":", "@", "\\", "\0",
                               " ", "é", "http://", "https://", "sha256-", "%2e"])
VALID_PART = {
    "host": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}(:[0-9]{1,5})?", fullmatch=True),
    "namespace": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,20}", fullmatch=True),
    "model": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    "tag": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
}


class TestNamesAndDigests:
    """Names and digests become paths; the grammar is the only thing between a client and the
    file system (CVE-2024-37032 was a digest that was not checked)."""

    @FUZZ
    @given(st.text(max_size=60) | st.lists(NAME_PIECES, max_size=14).map("".join))
    def test_any_text_is_a_name_or_invalid_name(self, text: str) -> None:
        try:
            name = ModelName.parse(text)
        except InvalidName:
            return
        self._assert_safe(name)

    @FUZZ
    @given(st.builds(ModelName.from_parts, VALID_PART["host"], VALID_PART["namespace"],
                     VALID_PART["model"], VALID_PART["tag"]))
    def test_valid_names_round_trip_through_their_forms(self, name: ModelName) -> None:
        self._assert_safe(name)
        assert ModelName.parse(str(name)).parts == name.parts
        assert ModelName.parse(name.display_shortest()).key == name.key
        assert ModelName.parse(f"http://{name}").scheme == "http"

    @staticmethod
    def _assert_safe(name: ModelName) -> None:
        for part in name.parts:
            assert part not in ("", ".", "..")
            assert not set(part) & {"/", "\\", "\0"}
        folder = Path("/store/manifests")
        path = ManifestStore(folder).path(name)
        assert path.parent.parent.parent.parent == folder
        assert path.relative_to(folder).parts == name.parts

    @FUZZ
    @given(st.text(max_size=80) | st.from_regex(r"sha256[:-][0-9a-fA-F./]{60,68}",
                                                  fullmatch=True))
    def test_digests_are_exactly_64_hex_or_invalid(self, text: str) -> None:
        try:
            digest = Digest.parse(text)
        except InvalidDigest:
            return
        assert len(digest.hex) == 64 and set(digest.hex) <= set("0123456789abcdef")
        assert Digest.from_filename(digest.filename) == digest
        assert Digest.parse(str(digest)) == digest


# -- store, registry and archive parsers --------------------------------------------------------

LAYER = st.fixed_dictionaries({
    "mediaType": st.sampled_from([MediaType.MODEL, MediaType.TEMPLATE, "x"]),
    "digest": st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
    "size": st.integers(0, 2**50)})


class TestRegistryInputs:
    """What a registry (or an archive, or a store written by someone else) hands over."""

    @FUZZ
    @given(st.binary(max_size=300)
           | JSON_VALUES.map(lambda value: json.dumps(value).encode())
           | st.fixed_dictionaries({"schemaVersion": st.just(2), "config": JSON_VALUES | LAYER,
                                    "layers": st.lists(JSON_VALUES | LAYER, max_size=3)}).map(
               lambda value: json.dumps(value).encode()))
    def test_manifests_parse_or_are_invalid(self, raw: bytes) -> None:
        try:
            manifest = Manifest.parse(raw)
        except InvalidManifest:
            return
        assert Manifest.parse(manifest.to_json()) == manifest

    @FUZZ
    @given(LAYER, st.lists(LAYER, max_size=4))
    def test_manifests_round_trip(self, config: dict[str, Any],
                                  layers: list[dict[str, Any]]) -> None:
        manifest = Manifest(Layer.from_json(config), tuple(Layer.from_json(x) for x in layers))
        assert Manifest.parse(manifest.to_json()) == manifest

    @FUZZ
    @given(st.text(max_size=40) | st.lists(st.sampled_from(
        ["blobs", "sha256", "/", "..", ".", "./", "oci-layout", "index.json", "a" * 64, "\\",
         "\0", "C" * 64]), max_size=6).map("".join),
        st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                         tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]))
    def test_archive_entries_are_layout_paths_or_refused(self, name: str, kind: bytes) -> None:
        member = tarfile.TarInfo(name)
        member.type = kind
        try:
            kept = archive.entry_name(member)
        except ArchiveRefused:
            return
        assert kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)
        assert kept in ("", ".", "blobs", "blobs/sha256", "oci-layout", "index.json") or (
            kept.startswith("blobs/sha256/") and Digest.parse("sha256:" + kept[13:]))

    @FUZZ
    @given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
           | st.lists(st.fixed_dictionaries({
               "digest": st.from_regex(r"sha256:[0-9a-f.]{64}", fullmatch=True) | JSON_VALUES,
               "size": st.integers(-1, 2**30) | JSON_VALUES,
               "annotations": st.dictionaries(st.sampled_from([archive.NAME_ANNOTATION,
                                                               archive.REF_ANNOTATION]),
                                              st.text(max_size=20) | JSON_VALUES)}),
               max_size=3).map(lambda entries: json.dumps({"manifests": entries}).encode()))
    def test_index_json_chooses_a_manifest_or_is_refused(self, raw: bytes) -> None:
        try:
            choice = archive.choose_manifest(raw, None)
        except ArchiveRefused:
            return
        assert choice.size > 0

    @FUZZ
    @given(st.binary(max_size=80) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
    def test_part_state_files_are_parts_or_none(self, data: bytes) -> None:
        part = parts.Part.from_json(data)
        if part is not None:
            assert 0 <= part.completed <= part.size and part.offset >= 0

    @FUZZ
    @given(st.text(max_size=60) | st.lists(st.sampled_from(
        ["Bearer ", "Basic ", "realm=", '"', "\\", ",", "service=", "scope=", "=", " ",
         "http://[", "x"]), max_size=10).map("".join))
    def test_challenges_parse_or_are_none(self, header: str) -> None:
        challenge = protocol.parse_challenge(header)
        if challenge is not None and challenge.realm:
            with contextlib.suppress(RegistryError):
                protocol.check_realm(protocol.token_url(challenge, 0, "n"), "http://reg.io")

    @FUZZ
    @given(st.text(max_size=40) | st.lists(st.sampled_from(
        ["http://", "https://", "ftp://", "[", "]", ":", "99999", "abc", "/", "host", "//"]),
        max_size=6).map("".join))
    def test_redirects_resolve_or_are_refused(self, location: str) -> None:
        try:
            url = protocol.resolve_location("http://reg.io:5000/v2/x/blobs/y", location)
        except RegistryError:
            return
        assert url.startswith(("http://", "https://"))
        protocol.same_host(url, "http://reg.io:5000")  # must not raise once resolved

    @FUZZ
    @given(st.integers(100, 599), st.text(max_size=30) | st.from_regex(
        r"bytes [0-9]{1,4}-[0-9]{1,4}/([0-9]{1,4}|\*)", fullmatch=True),
        st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 5000))
    def test_range_answers_are_accepted_or_refused(self, status: int, header: str, start: int,
                                                   end: int, total: int) -> None:
        with contextlib.suppress(RegistryError):
            protocol.check_range_response(status, header, start, end, total)


# -- GGUF headers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A small GGUF with every kind of value and two tensors, written by the gguf package."""
    import gguf

    folder = tmp_path_factory.mktemp("gguf")
    path = folder / "base.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_token_list(["a", "bb", "ccc", "<s>"])
    writer.add_token_scores([0.1, 0.2, 0.3, 0.0])
    writer.add_bool("x.flag", True)
    writer.add_array("x.ints", [1, 2, 3])
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.w", np.ones((8,), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder, path.read_bytes()


MUTATION = st.tuples(st.integers(0, 10_000), st.sampled_from(["byte", "u32", "u64", "cut"]),
                     st.integers(0, 2**64 - 1))


class TestGGUFHeaders:
    """A GGUF from the internet is parsed in the daemon only by the bounded reader: whatever the
    bytes, InvalidGGUF or a header, quickly (CVE-2024-39720 was a crafted GGUF crashing the
    server). The mutations overwrite lengths and counts, where readers trust the file."""

    @FUZZ
    @given(st.lists(MUTATION, min_size=1, max_size=4))
    def test_mutated_headers_read_or_are_invalid(self, small_gguf: tuple[Path, bytes],
                                                 mutations: list[tuple[int, str, int]]) -> None:
        folder, base = small_gguf
        data = bytearray(base)
        for position, kind, value in mutations:
            at = position % len(data)
            if kind == "byte":
                data[at] = value & 0xFF
            elif kind == "u32":
                data[at:at + 4] = struct.pack("<I", value & 0xFFFFFFFF)
            elif kind == "u64":
                data[at:at + 8] = struct.pack("<Q", value)
            else:
                del data[max(at, 1):]
        path = folder / "mutated.gguf"
        path.write_bytes(bytes(data))
        started = time.monotonic()
        for limit in (0, None):
            with contextlib.suppress(InvalidGGUF):
                read_gguf(path, array_limit=limit)
        assert time.monotonic() - started < 2


# -- the Modelfile ------------------------------------------------------------------------------

PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Co", "Cn", "Zs", "Zl", "Zp"))
WORD = st.text(PRINTABLE, min_size=1, max_size=8)
# The values render() writes back exactly: Ollama's format leaves a value that begins or ends
# with a quote, or holds three, ambiguous (its own round trip fails there too).
VALUE = st.lists(WORD | st.sampled_from([" ", "\n", '"']), min_size=1, max_size=8).map(
    "".join).filter(lambda s: s[0] != '"' and s[-1] != '"' and '"""' not in s)
COMMAND = st.one_of(
    st.builds(Command, st.sampled_from(["template", "system", "license", "adapter", "renderer",
                                        "parser", "draft", "requires"]), VALUE),
    st.builds(Command, st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
        lambda name: name != "model"), VALUE),
    st.builds(message_command, st.sampled_from(["system", "user", "assistant"]), VALUE),
)
MODELFILE_PIECES = st.sampled_from(
    ["FROM", "PARAMETER", "MESSAGE", "TEMPLATE", "ADAPTER", "from", '"""', '"', " ", "\n", "\r",
     "\t", "#", "user", "system", "stop", "num_ctx", "x", "/etc/passwd", "@sha256:", "a" * 64,
     "..", "~root", "\ufeff", "\0"])


class TestModelfile:
    """Modelfiles come from clients: only ModelfileError escapes the parser, and what show
    prints parses back to the same commands."""

    @FUZZ
    @given(st.text(max_size=200) | st.lists(MODELFILE_PIECES, max_size=30).map("".join))
    def test_any_text_parses_or_is_a_modelfile_error(self, text: str) -> None:
        with contextlib.suppress(ModelfileError):
            parse(text)

    @FUZZ
    @given(st.binary(max_size=200))
    def test_any_bytes_parse_or_are_a_modelfile_error(self, data: bytes) -> None:
        with contextlib.suppress(ModelfileError):
            parse(data)

    @FUZZ
    @given(st.from_regex(r"[A-Za-z0-9_./:@-]{1,30}", fullmatch=True), st.lists(COMMAND,
                                                                               max_size=5))
    def test_render_then_parse_gives_the_commands_back(self, model: str,
                                                      commands: list[Command]) -> None:
        modelfile = Modelfile([Command("model", model), *commands])
        assert parse(modelfile.render()).commands == modelfile.commands

    @FUZZ
    @given(st.text(max_size=120) | st.lists(MODELFILE_PIECES, max_size=30).map("".join))
    def test_the_daemon_turns_no_modelfile_into_a_path(self, text: str) -> None:
        """The daemon's classic create (CVE-2024-39722's class): any file a Modelfile names
        becomes a digest reference or an error, never a path the daemon would open."""
        try:
            request = create.classic_request(text)
        except BadRequest:
            return
        for key in ("files", "adapters", "draft_files"):
            for file_name, digest in request.get(key, {}).items():
                Digest.parse(digest)
                assert create.valid_file_name(file_name) or file_name.startswith("@")


# -- Go templates and the other prompt parsers --------------------------------------------------

TEMPLATE_TOKENS = st.sampled_from([
    "{{", "}}", "{{-", "-}}", "{{/*", "*/}}", " ", ".", "$", "$x", "$i", ":=", "=", "|", "(", ")",
    ",", "range", "if", "else", "end", "with", "define", "template", "block", "break",
    "continue", '"a"', "`b`", "1", "-1", "0x10", "1e3", "'c'", "nil", "true", ".Messages",
    ".Role", ".Content", ".System", ".Tools", ".Prompt", ".Response", ".ToolCalls", ".Function",
    ".Name", ".Arguments", "len", "index", "slice", "printf", '"%v"', '"%d"', '"%999s"', "print",
    "eq", "lt", "and", "or", "not", "call", "json", "html", "js", "urlquery", "toJson",
    "currentDate", "toTypeScriptType", "1000000", "99999999999999999999", "\n", "x",
])
TEMPLATE = st.lists(TEMPLATE_TOKENS | st.text(max_size=3), max_size=40).map("".join)
SMALL_LIMITS = prompt.Limits(max_output=4096, max_steps=20_000, max_seconds=2)
CHAT = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "1", "tool_name": "f"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}]


class TestTemplates:
    """A model's TEMPLATE is untrusted code: parsing and rendering raise only TemplateError,
    the output stays within its limit and no template runs away."""

    @FUZZ
    @given(TEMPLATE)
    def test_go_templates_parse_and_render_or_fail_with_template_error(self, text: str) -> None:
        started = time.monotonic()
        try:
            template = prompt.ChatTemplate.parse(text, limits=SMALL_LIMITS)
            template.capabilities, template.tool_call_tag  # noqa: B018 -- they walk the tree
            output = template.render(CHAT, tools=TOOLS, think=True)
            assert len(output) <= SMALL_LIMITS.max_output
        except prompt.TemplateError:
            pass
        try:
            raw = prompt.GoTemplate.parse(text, limits=SMALL_LIMITS)
            assert len(raw.execute({"Messages": [1, "a", {"Role": 2}], "x": None})) <= \
                SMALL_LIMITS.max_output
        except prompt.TemplateError:
            pass
        assert time.monotonic() - started < 3

    @FUZZ
    @given(st.lists(JSON_VALUES, max_size=3), st.lists(JSON_VALUES, max_size=2))
    def test_request_messages_and_tools_of_any_shape_render_or_fail_cleanly(
            self, messages: list[Any], tools: list[Any]) -> None:
        """Messages and tools as the socket or HTTP hands them over, of shapes no client should
        send: a 400 (BadRequest, TemplateError) at worst, never an internal error."""
        go = prompt.ChatTemplate.parse(
            "{{ range .Tools }}{{ .Function.Name }}{{ json .Function.Parameters }}"
            "{{ .Function.Parameters.Properties }}{{ end }}{{ range .Messages }}{{ .Role }}"
            "{{ .Content }}{{ range .ToolCalls }}{{ .Function.Name }}{{ .Function.Arguments }}"
            "{{ end }}{{ .ToolName }}{{ end }}", limits=SMALL_LIMITS)
        jinja = prompt.JinjaChatTemplate.parse(
            "{% for m in messages %}{{ m.role }}{{ m.content }}{{ m.tool_calls | tojson }}"
            "{% endfor %}{{ tools | tojson }}", limits=SMALL_LIMITS)
        try:
            checked = messages_arg({"messages": messages})
        except BadRequest:
            return
        for template in (go, jinja):
            with contextlib.suppress(prompt.TemplateError):
                template.render(checked, tools=tools or None)
        tool_parser = prompt.ToolParser(tools, "<tool_call>")
        tool_parser.add('<tool_call>{"name": "f", "arguments": {}}')
        tool_parser.content()

    @FUZZ
    @given(st.lists(st.text(max_size=8) | st.sampled_from(
        ["<think>", "</think>", "<tool_call>", "{", "}", '"name"', ":", '"f"', '"arguments"',
         "[TOOL_CALLS]"]), max_size=20), st.sampled_from(["{", "<tool_call>", "[TOOL_CALLS]"]))
    def test_model_output_parsers_take_any_stream(self, pieces: list[str], tag: str) -> None:
        tools = prompt.ToolParser(TOOLS, tag)
        thinking = prompt.ThinkingParser("<think>", "</think>")
        for piece in pieces:
            tools.add(piece)
            thinking.add(piece)
        tools.content()


# -- HTTP request bodies ------------------------------------------------------------------------

STRUCTS = [ollama_api.GENERATE, ollama_api.CHAT, ollama_api.EMBED, ollama_api.EMBEDDINGS,
           ollama_api.SHOW, ollama_api.DELETE, ollama_api.COPY, ollama_api.CREATE,
           ollama_api.PULL, ollama_api.PUSH, openai_requests.CHAT_REQUEST,
           openai_requests.COMPLETION_REQUEST, openai_requests.EMBED_REQUEST]
OPENAI = [(openai_requests.CHAT_REQUEST, openai_requests.chat_args),
          (openai_requests.COMPLETION_REQUEST, openai_requests.completion_args),
          (openai_requests.EMBED_REQUEST, openai_requests.embed_args)]


class TestHTTPBodies:
    """The bridge decodes bodies as Go's decoder does; HTTPProblem (a 4xx) is the only failure
    a body may cause, in the decoder and in the OpenAI mapping after it."""

    @FUZZ
    @given(st.binary(max_size=120) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
           | st.dictionaries(KEYS, JSON_VALUES, max_size=5).map(lambda v: json.dumps(v).encode()),
           st.sampled_from(STRUCTS))
    @example(b" \n", ollama_api.CHAT)
    @example(b'{"model": NaN}', ollama_api.CHAT)
    def test_bodies_decode_or_are_an_http_problem(self, data: bytes, struct: Any) -> None:
        try:
            body = decode(data, struct)
        except HTTPProblem as problem:
            assert 400 <= problem.status < 500
            return
        assert isinstance(body, dict)

    @FUZZ
    @given(st.dictionaries(KEYS, JSON_VALUES, max_size=6), st.sampled_from(OPENAI))
    def test_openai_requests_map_or_are_an_http_problem(self, body: dict[str, Any],
                                                        pair: Any) -> None:
        struct, mapping = pair
        try:
            mapping(decode(json.dumps(body).encode(), struct))
        except HTTPProblem as problem:
            assert 400 <= problem.status < 500

    def test_an_openai_null_message_is_a_bad_request(self) -> None:
        with pytest.raises(HTTPProblem):
            openai_requests.chat_args(decode(b'{"messages": [null]}',
                                             openai_requests.CHAT_REQUEST))

    def test_a_deeply_nested_body_is_a_bad_request(self) -> None:
        with pytest.raises(HTTPProblem):
            decode(b"[" * 100_000, ollama_api.CHAT)
