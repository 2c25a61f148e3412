"""Options and durations, typed and worded as Ollama types and words them."""

from __future__ import annotations

import math

import pytest

from ollamad import options
from ollamad.config import Settings
from ollamad.durations import parse_duration, parse_go_duration, parse_keep_alive
from ollamad.errors import BadRequest


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("300ms", 0.3),
    ("-1m", -60.0), ("2h45m30.5s", 9930.5), ("10us", 1e-5), ("+3s", 3.0),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert math.isclose(parse_go_duration(text), seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("300", 'time: missing unit in duration "300"'),
    ("-1", 'time: missing unit in duration "-1"'),
    ("1x", 'time: unknown unit "x" in duration "1x"'),
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
])
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_go_duration(text)


def test_keep_alive_numbers_are_seconds_and_negative_is_forever() -> None:
    assert parse_keep_alive(30) == 30.0
    assert parse_keep_alive(0.5) == 0.5
    assert parse_keep_alive(-1) == math.inf
    assert parse_keep_alive("-1m") == math.inf
    assert parse_keep_alive("0") == 0.0
    with pytest.raises(ValueError):
        parse_keep_alive("300")
    with pytest.raises(ValueError):
        parse_keep_alive(True)
    assert parse_duration("300") == 300.0  # the CLI and environment accept plain seconds


@pytest.mark.parametrize(("name", "value", "typed"), [
    ("top_k", 40.7, 40), ("temperature", 1, 1.0), ("use_mmap", False, False),
    ("stop", ["a", "b"], ["a", "b"]), ("num_ctx", 2048, 2048),
])
def test_request_options_are_typed(name: str, value: object, typed: object) -> None:
    assert options.from_map({name: value}) == {name: typed}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("top_k", "5", 'option "top_k" must be of type integer'),
    ("top_k", True, 'option "top_k" must be of type integer'),
    ("temperature", "hot", 'option "temperature" must be of type float32'),
    ("use_mmap", 1, 'option "use_mmap" must be of type boolean'),
    ("stop", "x", 'option "stop" must be of type array'),
    ("stop", [1], 'option "stop" must be of an array of strings'),
])
def test_request_option_type_errors(name: str, value: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        options.from_map({name: value})


def test_unknown_request_options_are_dropped_and_null_ignored() -> None:
    assert options.from_map({"nonsense": 1, "seed": None, "seed2": 3}) == {}


@pytest.mark.parametrize(("name", "values", "typed"), [
    ("temperature", ["0.7"], 0.7), ("num_ctx", ["4096"], 4096), ("use_mmap", ["false"], False),
    ("stop", ["<|im_end|>", "<|im_start|>"], ["<|im_end|>", "<|im_start|>"]),
])
def test_modelfile_parameters(name: str, values: list[str], typed: object) -> None:
    assert options.parse_parameter(name, values) == typed


@pytest.mark.parametrize(("name", "values", "message"), [
    ("nonsense", ["1"], "unknown parameter 'nonsense'"),
    ("num_ctx", ["big"], r"invalid int value \[big\]"),
    ("temperature", ["warm"], r"invalid float value \[warm\]"),
    ("use_mmap", ["maybe"], r"invalid bool value \[maybe\]"),
])
def test_modelfile_parameter_errors(name: str, values: list[str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        options.parse_parameter(name, values)


def test_defaults_follow_ollama_and_the_environment() -> None:
    defaults = options.defaults()
    assert defaults["num_ctx"] == 4096 and defaults["temperature"] == 0.8
    assert defaults["top_k"] == 40 and defaults["num_predict"] == -1 and defaults["seed"] == -1
    assert options.defaults(context_length=8192)["num_ctx"] == 8192
    assert "use_mmap" not in defaults


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("0", False), ("false", False), ("'0'", False), ("1", True),
    ("true", True), ("yes", True),
])
def test_flash_attention_from_the_environment(value: str | None, expected: bool | None) -> None:
    env = {"HOME": "/nonexistent"} | ({} if value is None else {"OLLAMA_FLASH_ATTENTION": value})
    assert Settings.from_env(env).flash_attention is expected
