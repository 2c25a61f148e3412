"""What list and show report, on a store laid out as Ollama writes it around a real GGUF."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from ollamad import gojson, model, model_info
from ollamad.errors import CorruptStore
from ollamad.prompt import jinja_capabilities
from ollamad.store import Digest, Layer, Manifest, MediaType, ModelName, ModelStore, StoredManifest
from ollamad.store.gguf import InvalidGGUF, file_type_name, read_gguf
from ollamad.store.modelfile import (
    Command,
    Modelfile,
    go_quote,
    go_value,
    parameters_text,
    quote,
    show_text,
)
from tests.ollama_layout import write_ollama_model

NAME = ModelName.parse("smollm2:135m")


@pytest.fixture
def store(tmp_path: Path, smollm2_gguf: Path) -> ModelStore:
    write_ollama_model(tmp_path / "models", smollm2_gguf)
    return ModelStore(tmp_path / "models")


def _manifest_file(store: ModelStore, name: ModelName = NAME) -> Path:
    return store.manifests.path(name)


def _add_model(store: ModelStore, tag: str, layers: list[tuple[str, bytes | Layer]],
               config: dict[str, Any] | None = None) -> StoredManifest:
    """A model made of ``layers`` (raw bytes, or a layer already in the store) and ``config``."""
    built = []
    for media_type, content in layers:
        if isinstance(content, Layer):
            built.append(Layer(media_type, content.digest, content.size))
        else:
            built.append(Layer(media_type, store.blobs.write_bytes(content), len(content)))
    raw_config = json.dumps(config if config is not None else
                            {"model_format": "gguf", "model_family": "llama",
                             "model_families": ["llama"], "model_type": "134.52M",
                             "file_type": "Q4_1"}).encode()
    config_layer = Layer(MediaType.CONFIG, store.blobs.write_bytes(raw_config), len(raw_config))
    name = ModelName.parse(f"custom:{tag}")
    # Written directly, not through write_manifest: some tests need a damaged model, whose
    # manifest names a blob that is not there.
    store.manifests.write(name, Manifest(config_layer, tuple(built)).to_json())
    return store.get(name)


def _weights(store: ModelStore) -> Layer:
    return store.get(NAME).manifest.layers_of(MediaType.MODEL)[0]


# -- list -----------------------------------------------------------------------------------------

def test_list_entry_matches_ollamas_tags_entry(store: ModelStore) -> None:
    stored = store.get(NAME)
    entry = model_info.list_entry(store, stored)
    raw = _manifest_file(store).read_bytes()
    manifest = json.loads(raw)
    assert list(entry) == ["name", "model", "modified_at", "size", "digest", "details"]
    assert entry["name"] == entry["model"] == "smollm2:135m"
    assert entry["digest"] == hashlib.sha256(raw).hexdigest()
    assert entry["size"] == manifest["config"]["size"] + sum(
        layer["size"] for layer in manifest["layers"])
    assert entry["modified_at"] == gojson.format_time(_manifest_file(store).stat().st_mtime_ns)
    assert entry["details"] == {
        "parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
        "parameter_size": "134.52M", "quantization_level": "Q4_1",
    }
    assert list(entry["details"]) == ["parent_model", "format", "family", "families",
                                      "parameter_size", "quantization_level"]


def test_list_entry_follows_gos_null_and_omitempty_rules(store: ModelStore) -> None:
    weights = _weights(store)
    stored = _add_model(store, "remote", [(MediaType.MODEL, weights)], {
        "model_format": "gguf", "model_family": "llama", "model_families": [],
        "remote_host": "https://ollama.com:443", "remote_model": "big",
        "capabilities": ["completion", "tools", "completion"], "context_length": 4096,
    })
    entry = model_info.list_entry(store, stored)
    assert list(entry) == ["name", "model", "remote_model", "remote_host", "modified_at", "size",
                           "digest", "details", "capabilities"]
    # An empty families list is copied into a nil slice by Ollama: null on the wire.
    assert entry["details"]["families"] is None
    assert entry["details"]["context_length"] == 4096
    assert "embedding_length" not in entry["details"]
    assert entry["capabilities"] == ["completion", "tools"]


def test_list_entry_does_not_open_the_weights(store: ModelStore) -> None:
    stored = _add_model(store, "noweights", [(MediaType.MODEL, b"not a gguf at all")])
    assert model_info.list_entry(store, stored)["details"]["family"] == "llama"


def test_list_entry_with_a_missing_config_blob_is_a_clear_error(store: ModelStore) -> None:
    stored = store.get(NAME)
    store.blobs.path(stored.manifest.config.digest).unlink()
    with pytest.raises(CorruptStore, match=r"smollm2:135m is damaged: its config blob .* missing"):
        model_info.list_entry(store, stored)


# -- show -----------------------------------------------------------------------------------------

TEMPLATE_LINE = (
    'TEMPLATE "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
    '{{ end }}<|im_start|>assistant\n"\n'
)


def _expected_modelfile(store: ModelStore, system_line: str, parameter_lines: str) -> str:
    blob = store.blobs.path(_weights(store).digest)
    return (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM smollm2:135m\n\n"
        f"FROM {blob}\n" + TEMPLATE_LINE + system_line + parameter_lines
        + "LICENSE Apache License 2.0\n"
    )


def test_show_reports_the_real_model(store: ModelStore) -> None:
    stored = store.get(NAME)
    shown = model_info.show(store, stored, verbose=False, system="", options={})
    assert list(shown) == ["license", "modelfile", "parameters", "template", "system", "details",
                           "model_info", "capabilities", "modified_at"]
    assert shown["license"] == "Apache License 2.0"
    assert shown["system"] == "You are a helpful assistant."
    assert shown["template"].startswith("{{- range .Messages }}<|im_start|>")
    assert shown["modelfile"] == _expected_modelfile(
        store, "SYSTEM You are a helpful assistant.\n",
        "PARAMETER stop <|im_start|>\nPARAMETER stop <|im_end|>\nPARAMETER temperature 0.2\n")
    assert shown["parameters"] == (
        'stop                           "<|im_start|>"\n'
        'stop                           "<|im_end|>"\n'
        "temperature                    0.2")
    assert shown["details"] == model_info.list_entry(store, stored)["details"]
    assert shown["capabilities"] == ["completion"]
    assert shown["modified_at"] == model_info.list_entry(store, stored)["modified_at"]

    info = shown["model_info"]
    assert list(info) == sorted(info)  # Go writes a map's keys sorted
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 8192
    assert info["llama.embedding_length"] == 576
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32, shortest form
    assert info["general.file_type"] == 3
    assert info["general.parameter_count"] == 134_515_008
    assert info["tokenizer.ggml.add_bos_token"] is False
    assert info["tokenizer.ggml.model"] == "gpt2"
    # Unless verbose, Ollama decodes no array: each shows as null.
    assert info["tokenizer.ggml.tokens"] is None and info["general.languages"] is None
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert "tensors" not in shown


def test_show_verbose_has_arrays_and_tensors(store: ModelStore) -> None:
    shown = model_info.show(store, store.get(NAME), verbose=True, system="", options={})
    info = shown["model_info"]
    assert len(info["tokenizer.ggml.tokens"]) == 49152
    assert info["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(info["tokenizer.ggml.token_type"]) == 49152
    assert info["general.languages"] == ["en"]
    assert list(shown)[-3:] == ["tensors", "capabilities", "modified_at"]
    tensors = shown["tensors"]
    assert len(tensors) == 272
    assert tensors[0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [576, 49152]}
    assert {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [576]} in tensors
    assert sum(_product(t["shape"]) for t in tensors) == info["general.parameter_count"]


def _product(shape: list[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def test_show_system_override_and_options_go_into_the_modelfile(store: ModelStore) -> None:
    shown = model_info.show(store, store.get(NAME), verbose=False, system="Be terse.",
                            options={"temperature": 0.5, "num_ctx": 1048576,
                                     "stop": ["User:"], "seed": 42})
    assert shown["system"] == "Be terse."
    assert shown["modelfile"] == _expected_modelfile(
        store, "SYSTEM Be terse.\n",
        "PARAMETER stop User:\nPARAMETER temperature 0.5\n"
        # Ollama formats JSON numbers as Go float64s.
        "PARAMETER num_ctx 1.048576e+06\nPARAMETER seed 42\n")
    # `parameters` stays what the model stores.
    assert shown["parameters"].endswith("temperature                    0.2")


def test_show_without_template_params_or_system(store: ModelStore) -> None:
    stored = _add_model(store, "bare", [(MediaType.MODEL, _weights(store))])
    shown = model_info.show(store, stored, verbose=False, system="", options={})
    # With no Go template the GGUF's own chat template is the one in use, and shown.
    assert shown["template"].startswith("{% for message in messages %}")
    assert shown["modelfile"].endswith(
        f"FROM {store.blobs.path(_weights(store).digest)}\nTEMPLATE {{{{ .Prompt }}}}\n")
    assert "parameters" not in shown and "system" not in shown and "license" not in shown
    assert shown["capabilities"] == ["completion"]


def test_show_messages_adapters_and_projector(store: ModelStore) -> None:
    weights = _weights(store)
    messages = json.dumps([{"role": "User", "content": "hi"},
                           {"role": "assistant", "content": "hello\nthere"}]).encode()
    stored = _add_model(store, "full", [
        (MediaType.MODEL, weights),
        (MediaType.ADAPTER, b"adapter"),
        (MediaType.PROJECTOR, weights),  # any GGUF does: only its header is read
        (MediaType.MESSAGES, messages),
        (MediaType.TEMPLATE, b"{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}{{ .Suffix }}"),
    ])
    shown = model_info.show(store, stored, verbose=False, system="", options={})
    assert shown["messages"] == [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "hello\nthere"}]
    lines = shown["modelfile"].splitlines()
    path = store.blobs.path
    assert lines[4:7] == [f"FROM {path(weights.digest)}",
                          f"ADAPTER {path(stored.manifest.layers[1].digest)}",
                          f"FROM {path(weights.digest)}"]
    assert shown["modelfile"].endswith('MESSAGE user hi\nMESSAGE assistant "hello\nthere"\n')
    assert shown["projector_info"]["general.name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert shown["capabilities"] == ["completion", "vision", "tools", "insert"]
    assert list(shown).index("messages") < list(shown).index("model_info") < \
        list(shown).index("projector_info")


def test_show_with_a_missing_layer_blob_is_a_clear_error(store: ModelStore) -> None:
    stored = store.get(NAME)
    store.blobs.path(stored.manifest.layers_of(MediaType.TEMPLATE)[0].digest).unlink()
    with pytest.raises(CorruptStore, match=r"its template blob sha256:[0-9a-f]{64} is missing"):
        model_info.show(store, stored, verbose=False, system="", options={})


def test_show_with_missing_weights_is_a_clear_error(store: ModelStore) -> None:
    absent = Layer(MediaType.MODEL, Digest("0" * 64), 10)
    stored = _add_model(store, "gone", [(MediaType.MODEL, absent)])
    with pytest.raises(CorruptStore, match=r"weights blob sha256:0{64} is missing"):
        model_info.show(store, stored, verbose=False, system="", options={})


def test_show_with_garbage_weights_is_a_clear_error(store: ModelStore) -> None:
    stored = _add_model(store, "garbage", [(MediaType.MODEL, os.urandom(4096))])
    with pytest.raises(CorruptStore, match=r"custom:garbage is damaged: .* not a readable GGUF"):
        model_info.show(store, stored, verbose=False, system="", options={})


def test_show_with_a_broken_params_layer_is_a_clear_error(store: ModelStore) -> None:
    stored = _add_model(store, "params", [(MediaType.MODEL, _weights(store)),
                                          (MediaType.PARAMS, b'["not", "an", "object"]')])
    with pytest.raises(CorruptStore, match=r"params blob .* unreadable"):
        model_info.show(store, stored, verbose=False, system="", options={})


def test_show_output_encodes_as_go_json(store: ModelStore) -> None:
    text = gojson.dumps(model_info.show(store, store.get(NAME), verbose=False, system="",
                                        options={}))
    assert text.startswith('{"license":"Apache License 2.0","modelfile":"# Modelfile generated')
    assert '"tokenizer.ggml.merges":null' in text
    assert '"capabilities":["completion"]' in text


# -- capabilities from templates -------------------------------------------------------------------

@pytest.mark.parametrize(("template", "expected"), [
    ("{{ .Prompt }}", []),
    ("{{ range .Messages }}{{ .Content }}{{ end }}", []),
    ("{{- if .Tools }}[TOOLS]{{ json .Tools }}{{ end }}{{ .Prompt }}", ["tools"]),
    ("{{ range $.Tools }}{{ .Function.Name }}{{ end }}", ["tools"]),
    ("<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>", ["insert"]),
    # Names inside string literals and comments are not references.
    ('{{ "{{ .Tools }}" }}{{/* .Suffix */}}{{ .Prompt }}', []),
    ("{{ range .Messages }}{{ if .Thinking }}<reason>{{ .Thinking }}</reason>{{ end }}"
     "{{ .Content }}{{ end }}", ["thinking"]),
    # Thinking outside the messages loop tells nothing about how the model marks it.
    ("{{ if .Thinking }}<reason>{{ .Thinking }}</reason>{{ end }}{{ .Prompt }}", []),
    ("{{- range $i, $m := .Messages }}\n  {{- if eq .Role \"assistant\" }}\n"
     "    [THINK] {{ .Thinking }} [/THINK]\n  {{- else if .Tools }}{{ end }}{{ end }}",
     ["tools", "thinking"]),
    ("{{ if .Prompt }}unclosed", []),
])
def test_go_template_capabilities(template: str, expected: list[str]) -> None:
    assert model._go_template_capabilities(template) == expected


def test_chat_template_capabilities() -> None:
    assert jinja_capabilities("{% if tools %}x{% endif %}") == ["tools"]
    assert jinja_capabilities("<think>\n{{ r }}\n</think>") == ["thinking"]
    assert jinja_capabilities("{{ messages }}") == []


# -- the GGUF reader -------------------------------------------------------------------------------

def test_read_gguf_header(smollm2_gguf: Path) -> None:
    info = read_gguf(smollm2_gguf, array_limit=0)
    assert list(info.kv)[:2] == ["general.architecture", "general.type"]  # file order
    assert info.architecture == "llama"
    assert info.arch_value("block_count") == 30
    assert info.kv["tokenizer.ggml.merges"] is None
    assert info.parameter_count == 134_515_008
    assert file_type_name(info.kv["general.file_type"]) == "Q4_1"
    full = read_gguf(smollm2_gguf)
    assert full.kv["tokenizer.ggml.merges"][0] == "Ġ t"
    assert full.tensors == info.tensors


def test_file_type_names() -> None:
    assert [file_type_name(n) for n in (0, 1, 15, 32, 1024, 9999, "Q4_0")] == [
        "F32", "F16", "Q4_K_M", "BF16", "unknown", "unknown", "unknown"]


@pytest.mark.parametrize("keep", [5000, 50_000_000, -1])
def test_truncated_gguf_is_invalid(smollm2_gguf: Path, tmp_path: Path, keep: int) -> None:
    copy = tmp_path / "short.gguf"
    with open(smollm2_gguf, "rb") as source, open(copy, "wb") as target:
        size = smollm2_gguf.stat().st_size
        shutil.copyfileobj(source, target)
        target.truncate(keep if keep > 0 else size + keep)
    with pytest.raises(InvalidGGUF, match=r"not a readable GGUF"):
        read_gguf(copy)


def _header(kv_count: int, tensor_count: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count)


def _key(name: bytes, value_type: int) -> bytes:
    return struct.pack("<Q", len(name)) + name + struct.pack("<I", value_type)


@pytest.mark.parametrize("data", [
    b"",
    b"GGUF",
    os.urandom(65536),
    b"GGML" + bytes(100),
    _header(2**60),  # more key/value pairs than could exist
    _header(0, 2**50),
    _header(3),  # pairs announced, none there
    _header(1) + struct.pack("<Q", 2**62) + b"k",  # a key longer than the file
    _header(1) + _key(b"a", 9) + struct.pack("<IQ", 0, 2**40),  # an absurd array
    _header(1) + _key(b"a", 9) + struct.pack("<IQ", 4, 1000) + bytes(64),  # array past the end
    _header(1) + _key(b"a", 9) + struct.pack("<IQ", 8, 10**6) + bytes(64),  # strings past it
    _header(1) + _key(b"a", 9) + struct.pack("<IQ", 9, 1) + bytes(64),  # nested arrays
    _header(1) + _key(b"a", 99) + bytes(64),  # no such value type
    _header(0, 1) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 2**31) + bytes(64),
], ids=lambda data: f"{len(data)}-bytes")
def test_hostile_headers_are_invalid(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    with pytest.raises(InvalidGGUF):
        read_gguf(path, array_limit=0)


def test_a_directory_or_missing_file_is_invalid(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(InvalidGGUF):
            read_gguf(path)


def test_minimal_gguf(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    name = b"general.architecture"
    path.write_bytes(_header(2) + _key(name, 8) + struct.pack("<Q", 4) + b"test"
                     + _key(b"test.pooling_type", 4) + struct.pack("<I", 1))
    info = read_gguf(path)
    assert info.kv == {"general.architecture": "test", "test.pooling_type": 1}
    assert info.tensors == () and info.parameter_count == 0


# -- Modelfile rendering ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ('with "quotes"', 'with "quotes"'),
    ("two\nlines", '"two\nlines"'),
    (' leading', '" leading"'),
    ('say "hi"\n', '"""say "hi"\n"""'),
    ("", ""),
])
def test_quote(text: str, expected: str) -> None:
    assert quote(text) == expected


@pytest.mark.parametrize(("number", "expected"), [
    (0.2, "0.2"), (4096, "4096"), (1e6, "1e+06"), (123456, "123456"), (1234567, "1.234567e+06"),
    (1e-05, "1e-05"), (0.0001, "0.0001"), (-2.0, "-2"), (0.0, "0"), (1e21, "1e+21"),
])
def test_go_value_prints_json_numbers_as_go_float64(number: float, expected: str) -> None:
    assert go_value(number) == expected


def test_go_quote() -> None:
    assert go_quote('a"b\\c\n\t\x01é\u200b😀') == '"a\\"b\\\\c\\n\\t\\x01é\\u200b😀"'


def test_parameters_text() -> None:
    assert parameters_text({"stop": ["a", "b"], "num_ctx": 2048, "mirostat": True,
                            "penalty": None}) == (
        'stop                           "a"\n'
        'stop                           "b"\n'
        "num_ctx                        2048\n"
        "mirostat                       true\n"
        "penalty                        <nil>")


def test_modelfile_commands_render_in_ollamas_syntax() -> None:
    modelfile = Modelfile([Command("model", "/blobs/x"), Command("system", " padded"),
                           Command("stop", "<end>"), Command("message", "user: a: b")])
    assert modelfile.render() == 'FROM /blobs/x\nSYSTEM " padded"\nPARAMETER stop <end>\n' \
        "MESSAGE user a: b\n"
    assert show_text("m:latest", modelfile, safetensors=True) == (
        '# Modelfile generated by "ollama show"\nFROM m:latest\nSYSTEM " padded"\n'
        "PARAMETER stop <end>\nMESSAGE user a: b\n")
