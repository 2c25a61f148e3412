"""The prompt package: the Go template engine, Ollama's rendering, tools, thinking, Jinja."""

from __future__ import annotations

import random
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ollamad.prompt import (
    ChatTemplate,
    GoTemplate,
    JinjaChatTemplate,
    Limits,
    TemplateError,
    ThinkingParser,
    ToolParser,
    Values,
    generate_messages,
    infer_tags,
    jinja_capabilities,
    parse_tag,
    tag_images,
    tool_call_id,
)
from ollamad.prompt.gofmt import format_float, json_float, marshal
from ollamad.prompt.goprintf import sprintf
from ollamad.prompt.govalues import GoStruct


def go(source: str, data: Any = None, **kwargs: Any) -> str:
    return GoTemplate.parse(source).execute(data, **kwargs)


# --- engine: syntax and whitespace -------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("a  {{- 1 -}}  b", "a1b"),
    ("a  {{- 1 }}  b", "a1  b"),
    ("a \n {{ 1 -}} \n b", "a \n 1b"),
    ("{{-3}}", "-3"),  # no space after the dash: a negative number, not a trim marker
    ("x {{- /* note */ -}} y", "xy"),
    ("x {{/* note */}} y", "x  y"),
    ("{{ `raw\\n` }}|{{ \"tab\\there\" }}|{{ 'a' }}", "raw\\n|tab\there|97"),
    ("{{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000 }} {{ .5 }} {{ 1e3 }}",
     "31 15 15 5 1000 0.5 1000"),
    ("{{ 1.0 }} {{ 1e6 }} {{ 1234567.0 }} {{ 0.00001 }} {{ 2.5 }}",
     "1 1e+06 1.234567e+06 1e-05 2.5"),
    ("{{ true }} {{ false }} {{ \"\\u00e9\\x41\" }}", "true false éA"),
    ("{{ (1) }} {{ (print 1 2) }} {{ print (len \"ab\") }}", "1 1 2 2"),
])
def test_literals_and_trimming(source: str, expected: str) -> None:
    assert go(source) == expected


@pytest.mark.parametrize(("source", "message"), [
    ("{{ .Prompt ", "unclosed action"),
    ("{{ if 1 }}x", "unexpected EOF"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ nofunc 1 }}", 'function "nofunc" not defined'),
    ("{{ $undefined }}", 'undefined variable "$undefined"'),
    ("{{ break }}", "{{break}} outside {{range}}"),
    ("{{ range . }}{{ else }}{{ continue }}{{ end }}", "{{continue}} outside {{range}}"),
    ("{{ \"a\" | 1 }}", "non executable command in pipeline stage 2"),
    ("{{ ( 1 }}", "unclosed left paren"),
    ("{{ \"open }}", "unterminated quoted string"),
    ("{{/* open }}", "unclosed comment"),
    ("{{ 08 }}", "integer overflow"),
    ("{{ if }}{{ end }}", "missing value for if"),
    ('{{ define "a" }}x{{ end }}{{ define "a" }}y{{ end }}', "multiple definition"),
    ("{{ 1i }}", "complex"),
])
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        GoTemplate.parse(source)


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


# --- engine: control flow and variables --------------------------------------------------------


def test_if_else_chain() -> None:
    source = ('{{ if eq . 1 }}one{{ else if eq . 2 }}two{{ else if gt . 9 }}big'
              '{{ else }}other{{ end }}')
    assert [go(source, n) for n in (1, 2, 10, 5)] == ["one", "two", "big", "other"]


def test_range_over_lists_maps_and_ints() -> None:
    assert go("{{ range $i, $v := . }}{{ $i }}={{ $v }};{{ end }}", ["a", "b"]) == "0=a;1=b;"
    assert go("{{ range $k, $v := . }}{{ $k }}:{{ $v }} {{ end }}", {"b": 1, "a": 2}) == "a:2 b:1 "
    assert go("{{ range . }}{{ . }}{{ end }}", {"b": 1, "a": 2}) == "21"
    assert go("{{ range 3 }}{{ . }}{{ end }}") == "012"
    assert go("{{ range . }}x{{ else }}empty{{ end }}", []) == "empty"
    assert go("{{ range .Missing }}x{{ else }}none{{ end }}", {}) == "none"


def test_range_break_and_continue() -> None:
    source = ("{{ range . }}{{ if eq . 2 }}{{ continue }}{{ end }}"
              "{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}")
    assert go(source, [1, 2, 3, 4, 5]) == "13"


def test_range_over_a_string_fails() -> None:
    with pytest.raises(TemplateError, match="range can't iterate over abc"):
        go("{{ range . }}{{ end }}", "abc")


def test_with_and_else_with() -> None:
    source = "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}"
    assert go(source, {"A": "x"}) == "a=x"
    assert go(source, {"B": "y"}) == "b=y"
    assert go(source, {}) == "none"


def test_variables_scope_and_assignment() -> None:
    # "=" assigns the variable declared outside the loop (the alpaca/gemma templates rely on it)
    assert go('{{ $s := "" }}{{ range . }}{{ $s = printf "%s%s" $s . }}{{ end }}{{ $s }}',
              ["a", "b"]) == "ab"
    # ":=" inside a block shadows until the block ends
    assert go("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}") == "21"
    assert go("{{ if $x := 5 }}{{ $x }}{{ end }}") == "5"
    assert go("{{ range $i, $_ := .L }}{{ $.n }}{{ end }}", {"n": "N", "L": [1]}) == "N"


def test_define_template_and_block() -> None:
    source = ('{{ define "item" }}[{{ . }}]{{ end }}{{ range . }}{{ template "item" . }}{{ end }}'
              '{{ block "tail" "end" }}<{{ . }}>{{ end }}')
    assert go(source, [1, 2]) == "[1][2]<end>"


def test_and_or_short_circuit_and_return_operands() -> None:
    assert go("{{ and 1 0 (index .L 5) }}|{{ or 0 \"\" \"x\" }}|{{ or 0 \"\" }}", {"L": []}) \
        == "0|x|"
    assert go("{{ not 0 }} {{ not \"x\" }} {{ not .L }}", {"L": []}) == "true false true"


def test_pipelines_pass_the_final_argument() -> None:
    assert go('{{ "b" | printf "%s-%s" "a" }}') == "a-b"
    assert go("{{ . | len | printf \"%d\" }}", [1, 2, 3]) == "3"


# --- engine: comparisons and builtins ----------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ eq 1 2 3 1 }}", "true"),
    ('{{ eq "a" "a" }}', "true"),
    ("{{ ne 1 2 }}", "true"),
    ('{{ lt "a" "b" }} {{ le 2 2 }} {{ gt 2.5 1.5 }} {{ ge 1 2 }}', "true true true false"),
    ('{{ eq .Missing "x" }}', "false"),
    ("{{ eq .Missing nil }}", "true"),
])
def test_comparisons(source: str, expected: str) -> None:
    assert go(source, {}) == expected


@pytest.mark.parametrize(("source", "message"), [
    ("{{ eq 1 1.0 }}", "error calling eq: incompatible types for comparison"),
    ('{{ lt "a" 1 }}', "incompatible types for comparison"),
    ("{{ lt true false }}", "invalid type for comparison"),
    ("{{ eq . . }}", "non-comparable type"),
    ("{{ eq 1 }}", "missing argument for comparison"),
])
def test_comparison_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        go(source, [1])


def test_len_index_slice() -> None:
    data = {"L": [1, 2, 3], "M": {"k": "v"}, "S": "héllo"}
    assert go("{{ len .L }} {{ len .M }} {{ len .S }}", data) == "3 1 6"  # bytes, as Go
    assert go('{{ index .L 1 }} {{ index .M "k" }} {{ index .M "x" }}', data) == "2 v <no value>"
    assert go("{{ slice .L 1 }} {{ slice .L 0 2 }} {{ slice .S 0 1 }}", data) == "[2 3] [1 2] h"
    with pytest.raises(TemplateError, match="index out of range: 5"):
        go("{{ index .L 5 }}", data)
    with pytest.raises(TemplateError, match=re.escape("invalid slice index: 2 > 1")):
        go("{{ slice .L 2 1 }}", data)


def test_print_functions_and_escapers() -> None:
    assert go('{{ print 1 2 "a" 3 "b" "c" }}') == "1 2a3bc"
    assert go("{{ println 1 \"a\" }}") == "1 a\n"
    assert go("{{ html \"<a href='x'>&\" }}") == "&lt;a href=&#39;x&#39;&gt;&amp;"
    assert go("{{ js \"a'b<\" }}") == "a\\'b\\u003C"
    assert go('{{ urlquery "a b&c/é" }}') == "a+b%26c%2F%C3%A9"


@pytest.mark.parametrize(("fmt", "args", "expected"), [
    ("%s and %d", ["x", 3], "x and 3"),
    ("%5.2f|%-4d|%04d|%+d|%x|%X|%o|%b", [3.14159, 7, -7, 5, 255, 255, 8, 5],
     " 3.14|7   |-007|+5|ff|FF|10|101"),
    ("%q %v %T %T", ["a\nb", [1, "x"], 1.5, {}], '"a\\nb" [1 x] float64 map[string]interface {}'),
    ("%d", ["x"], "%!d(string=x)"),
    ("%s %s", ["a"], "a %!s(MISSING)"),
    ("%s", ["a", 1], "a%!(EXTRA int=1)"),
    ("%[2]s %[1]s", ["a", "b"], "b a"),
    ("%*d|%.*f", [4, 1, 2, 3.14159], "   1|3.14"),
    ("%v %g %e %.3g", [1e21, 100000.0, 1234.5678, 1234567.0],
     "1e+21 100000 1.234568e+03 1.23e+06"),
    ("%c %U %x", [0x263A, 0x263A, "hé"], "☺ U+263A 68c3a9"),
    ("100%%", [], "100%"),
    ("%", [], "%!(NOVERB)"),
    ("%999999999d|", [1], "%!(NOVERB)%!(EXTRA int=1)"),
    ("%*d", ["x", 1], "%!(BADWIDTH)1"),
])
def test_printf_matches_go(fmt: str, args: list[Any], expected: str) -> None:
    assert sprintf(fmt, args) == expected


def test_float_and_json_formatting_match_go() -> None:
    assert [format_float(v) for v in (1e6, 123456.0, 0.0001, 1e-5, 1e20, -0.0, 3.0)] == \
        ["1e+06", "123456", "0.0001", "1e-05", "1e+20", "-0", "3"]
    assert [json_float(v) for v in (1e6, 1e20, 1e21, 1e-7, 0.1, 3.0)] == \
        ["1000000", "100000000000000000000", "1e+21", "1e-7", "0.1", "3"]
    assert marshal({"b": "<&>\u2028", "a": [1, 2.5, None, True]}) == \
        '{"a":[1,2.5,null,true],"b":"\\u003c\\u0026\\u003e\\u2028"}'


def test_printing_of_composite_values() -> None:
    data = {"m": {"b": [1, "x"], "a": None}, "l": [None, True, 1.5]}
    assert go("{{ .m }}|{{ .l }}|{{ print .m }}", data) == \
        "map[a:<nil> b:[1 x]]|[<nil> true 1.5]|map[a:<nil> b:[1 x]]"


# --- engine: missing keys, structs, methods ----------------------------------------------------


def test_missing_keys_follow_missingkey_zero() -> None:
    assert go("{{ .Missing }}|{{ print .Missing }}", {}) == "<no value>|<nil>"
    assert go("{{ if .Missing }}yes{{ else }}no{{ end }}", {}) == "no"
    with pytest.raises(TemplateError, match=re.escape("nil pointer evaluating interface {}.B")):
        go("{{ .Missing.B }}", {})
    # missingkey=default (how Ollama runs the cut legacy template) quietly gives nothing
    assert go("{{ .Missing.B }}", {}, missingkey="default") == "<no value>"
    assert go("{{ $x := .Missing }}{{ $x.B }}", {}) == "<no value>"


class _Point(GoStruct):
    __slots__ = ("X", "Y")
    go_type = "main.Point"
    go_methods = {"Sum": "sum"}  # noqa: RUF012 - a class-level table, never mutated

    def __init__(self, x: int, y: int) -> None:
        self.X, self.Y = x, y

    @classmethod
    def go_field_names(cls) -> tuple[str, ...]:
        return ("X", "Y")

    def sum(self, extra: int = 0) -> int:
        return self.X + self.Y + extra


def test_struct_fields_and_methods() -> None:
    point = _Point(1, 2)
    tmpl = GoTemplate.parse("{{ .X }},{{ .Y }} {{ . }} {{ .Sum }} {{ .Sum 10 }} {{ json . }}",
                            {"json": marshal})
    assert tmpl.execute(point) == '1,2 {1 2} 3 13 {"X":1,"Y":2}'
    with pytest.raises(TemplateError, match=r"can't evaluate field Z in type main\.Point"):
        go("{{ .Z }}", point)
    with pytest.raises(TemplateError, match="X has arguments but cannot be invoked"):
        go("{{ .X 1 }}", point)


def test_execution_errors_carry_go_context() -> None:
    with pytest.raises(TemplateError) as info:
        go("line one\n{{ .A.B }}", {"A": "text"})
    assert str(info.value) == ('template: :2:5: executing "" at <.A.B>: '
                               "can't evaluate field B in type string")
    with pytest.raises(TemplateError, match=re.escape('template "nope" not defined')):
        go('{{ template "nope" }}')
    with pytest.raises(TemplateError, match="wrong type for value; expected string; got int"):
        go("{{ printf .N }}", {"N": 1})


# --- engine: hostile templates -----------------------------------------------------------------


def test_output_limit() -> None:
    small = Limits(max_output=1000)
    with pytest.raises(TemplateError, match="output exceeds"):
        GoTemplate.parse("{{ range 1000000000 }}xxxxxxxxxx{{ end }}", limits=small).execute(None)


def test_step_limit_stops_silent_loops() -> None:
    source = "{{ range 100000 }}{{ range 100000 }}{{ end }}{{ end }}"
    with pytest.raises(TemplateError, match="steps"):
        GoTemplate.parse(source, limits=Limits(max_steps=100_000)).execute(None)


def test_string_doubling_hits_the_output_limit_in_values() -> None:
    source = '{{ $s := "x" }}{{ range 100 }}{{ $s = printf "%s%s" $s $s }}{{ end }}{{ len $s }}'
    with pytest.raises(TemplateError):
        GoTemplate.parse(source, limits=Limits(max_steps=10_000)).execute(None)


def test_recursive_template_is_stopped() -> None:
    source = '{{ define "r" }}{{ template "r" . }}{{ template "r" . }}{{ end }}{{ template "r" }}'
    with pytest.raises(TemplateError, match="maximum template depth"):
        go(source)


def test_nesting_and_size_limits_at_parse_time() -> None:
    with pytest.raises(TemplateError, match="nested deeper"):
        GoTemplate.parse("{{ if 1 }}" * 200 + "{{ end }}" * 200)
    with pytest.raises(TemplateError, match="nested deeper"):
        GoTemplate.parse("{{ " + "(" * 500 + "1" + ")" * 500 + " }}")
    with pytest.raises(TemplateError, match="longer than"):
        GoTemplate.parse("x" * 100, limits=Limits(max_source=10))


# --- Ollama rendering --------------------------------------------------------------------------

CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")


def test_messages_mode_collates_roles() -> None:
    tmpl = ChatTemplate.parse("{{ .System }}|{{ range .Messages }}{{ .Role }}:{{ .Content }};"
                              "{{ end }}")
    out = tmpl.render([
        {"role": "system", "content": "S1"},
        {"role": "SYSTEM", "content": "S2"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "tool", "content": "t1", "tool_name": "x"},
        {"role": "tool", "content": "t2", "tool_name": "y"},
    ])
    assert out == "S1\n\nS2|system:S1\n\nS2;user:a\n\nb;tool:t1;tool:t2;"


MISTRAL_CHAT = [
    {"role": "user", "content": "Hello friend!"},
    {"role": "assistant", "content": "Hello human!"},
    {"role": "user", "content": "What is your name?"},
]


@pytest.mark.parametrize("source", [
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] ",
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] {{ .Response }}",
    ("[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{- range .Messages }}"
     "{{- if eq .Role \"user\" }}{{ .Content }}[/INST] {{ else if eq .Role \"assistant\" }}"
     "{{ .Content }}[INST] {{ end }}{{- end }}"),
])
def test_legacy_and_messages_templates_agree(source: str) -> None:
    tmpl = ChatTemplate.parse(source)
    assert tmpl.render(MISTRAL_CHAT) == \
        "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "
    with_system = [{"role": "system", "content": "Be nice!"}, *MISTRAL_CHAT]
    assert tmpl.render(with_system) == \
        "[INST] Be nice!\n\nHello friend![/INST] Hello human![INST] What is your name?[/INST] "


def test_legacy_template_is_cut_after_the_response() -> None:
    tmpl = ChatTemplate.parse("{{ if .System }}<s>{{ .System }}</s>{{ end }}"
                              "<u>{{ .Prompt }}</u><a>{{ .Response }}</a>")
    assert tmpl.render([{"role": "user", "content": "hi"}]) == "<u>hi</u><a>"
    # an unfinished assistant turn is continued
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "r1"}, {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "partial"}]
    assert tmpl.render(chat) == "<s>S</s><u>q1</u><a>r1</a><u>q2</u><a>partial"


def test_cut_follows_ollamas_walk() -> None:
    chat = [{"role": "user", "content": "q"}]
    # a command left without arguments takes its whole action with it
    assert ChatTemplate.parse("<{{ .Prompt }}>{{ .Response | printf \"%s!\" }}|").render(
        chat) == "<q>"
    # the pipeline of an if is not searched, its body is
    assert ChatTemplate.parse("{{ if .Response }}x{{ end }}[{{ .Prompt }}]{{ .Response }}#"
                              ).render(chat) == "[q]"
    with pytest.raises(TemplateError, match="cut"):
        ChatTemplate.parse("{{ .Prompt }}{{ if 1 }}{{ .Response }}{{ else }}x{{ end }}").render(
            chat)


def test_response_is_appended_to_templates_without_it() -> None:
    tmpl = ChatTemplate.parse("{{ .System }} {{ .Prompt }}")
    assert tmpl.vars == ["prompt", "response", "system"]
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]
    assert tmpl.render(chat) == " ab c"


def test_default_template_and_generate() -> None:
    tmpl = ChatTemplate.parse(None)
    assert tmpl.render_generate("Why is the sky blue?") == "Why is the sky blue?"
    chatml = ChatTemplate.parse(CHATML)
    assert chatml.render_generate("q", system="S") == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"


def test_generate_with_images_and_history() -> None:
    chatml = ChatTemplate.parse(CHATML)
    history = [{"role": "user", "content": "h1"}, {"role": "assistant", "content": "h2"}]
    assert generate_messages("q", history=history)[:2] == history
    assert chatml.render_generate("q", history=history, images=[b"png"]) == (
        "<|im_start|>user\nh1<|im_end|>\n<|im_start|>assistant\nh2<|im_end|>\n"
        "<|im_start|>user\n[img-0]q<|im_end|>\n<|im_start|>assistant\n")


def test_fill_in_the_middle() -> None:
    tmpl = ChatTemplate.parse("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"
                              "{{- else }}{{ .Prompt }}{{- end }}")
    assert tmpl.uses_suffix and "insert" in tmpl.capabilities
    assert tmpl.render_generate("def add(", suffix="return x") == \
        "<PRE> def add( <SUF>return x <MID>"
    assert tmpl.render([{"role": "user", "content": "hello"}]) == "hello"


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ .Prompt }}", ["prompt", "response"]),
    ("{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}",
     ["prompt", "response", "system", "tools"]),
    ("{{ range .Messages }}{{ if eq .Role \"tool\" }}{{ .ToolName }} {{ .Content }}{{ end }}"
     "{{ end }}", ["content", "messages", "role", "toolname"]),
])
def test_template_vars(source: str, expected: list[str]) -> None:
    assert ChatTemplate.parse(source).vars == expected


def test_undefined_template_call_is_a_parse_error() -> None:
    with pytest.raises(TemplateError, match="undefined template specified"):
        ChatTemplate.parse('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}')


def test_think_values() -> None:
    tmpl = ChatTemplate.parse("{{ range .Messages }}{{ end }}{{ .Think }} {{ .ThinkLevel }} "
                              "{{ .IsThinkSet }}")
    chat = [{"role": "user", "content": "x"}]
    assert tmpl.render(chat) == "false  false"
    assert tmpl.render(chat, think=True) == "true medium true"
    assert tmpl.render(chat, think=False) == "false  true"
    assert tmpl.render(chat, think="high") == "true high true"


def test_date_functions_use_the_clock() -> None:
    tmpl = ChatTemplate.parse("{{ range .Messages }}{{ end }}{{ currentDate }} {{ yesterdayDate }}",
                              clock=lambda: datetime(2025, 3, 1, 12, 0))
    assert tmpl.render([]) == "2025-03-01 2025-02-28"


def test_tag_images() -> None:
    messages, media = tag_images([
        {"role": "user", "content": "look", "images": [b"one"]},
        {"role": "user", "content": "and [img] here", "images": ["dHdv"]},
    ])
    assert [m["content"] for m in messages] == ["[img-0]look", "and [img-1] here"]
    assert media == [(0, b"one"), (1, b"two")]


# --- tools in templates ------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {
                "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                "city": {"type": "string", "description": "The city"},
            },
        },
    },
}

TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abc", "function": {"index": 0, "name": "get_weather",
                                        "arguments": {"unit": "c", "city": "Paris", "n": 1}}}]},
    {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_abc"},
]

QWEN_LIKE = """\
{{- if .Tools }}<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "assistant" }}<a>{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}</a>
{{ else if eq .Role "tool" }}<r name="{{ .ToolName }}" id="{{ .ToolCallID }}">{{ .Content }}</r>
{{ else }}<u>{{ .Content }}</u>
{{ end }}
{{- end }}"""


def test_tools_render_as_json() -> None:
    tmpl = ChatTemplate.parse(QWEN_LIKE)
    assert tmpl.uses_tools and tmpl.capabilities == ["tools"]
    assert tmpl.render(TOOL_CHAT, tools=[WEATHER_TOOL]) == (
        '<tools>\n{"type": "function", "function": {"name":"get_weather",'
        '"description":"Get the weather","parameters":{"type":"object","required":["city"],'
        '"properties":{"unit":{"type":["string","null"],"enum":["c","f"]},'
        '"city":{"type":"string","description":"The city"}}}}}\n</tools>\n'
        "<u>Weather in Paris?</u>\n"
        '<a><tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris","n":1,"unit":"c"}}'
        "\n</tool_call></a>\n"
        '<r name="get_weather" id="call_abc">sunny</r>\n')


def test_tool_values_in_go_shapes() -> None:
    source = ("{{ range .Messages }}{{ range .ToolCalls }}{{ .ID }} {{ .Function.Index }} "
              "{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }}"
              "{{ json .Function.Arguments }}{{ end }}{{ end }}#"
              "{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}"
              "{{ $name }}:{{ $p.Type }}:{{ toTypeScriptType $p }}:{{ $p.Enum }};{{ end }}"
              "{{ json . }}{{ end }}")
    out = ChatTemplate.parse(source).render(TOOL_CHAT, tools=[WEATHER_TOOL])
    calls, tools = out.split("#")
    assert calls == 'call_abc 0 city=Paris;n=1;unit=c;{"city":"Paris","n":1,"unit":"c"}'
    props, tool_json = tools.split(";{")
    assert props == "city:string:string:[];unit:[string null]:string | null:[c f]"
    assert tool_json.startswith('"type":"function","function":{"name":"get_weather"')
    assert '"properties":{"city":' in tool_json  # a Go map: sorted keys


def test_no_tools_print_as_null() -> None:
    tmpl = ChatTemplate.parse("{{ range .Messages }}{{ end }}{{ .Tools }} {{ json .Tools }}"
                              "{{ if .Tools }}!{{ end }}")
    assert tmpl.render([]) == "null null"
    assert tmpl.render([], tools=[]) == "[] []"


# --- tool calls in output ----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "tag"), [
    (QWEN_LIKE, "<tool_call>"),
    ('{{ range .Messages }}{{ if .ToolCalls }}[TOOL_CALLS] [{{ range .ToolCalls }}{}{{ end }}]'
     "{{ end }}{{ end }}", "[TOOL_CALLS] ["),
    ("{{ if .ToolCalls }}\n [ {{ range .ToolCalls }}{{ . }}{{ end }}]{{ end }}", "["),
    ("{{ if .ToolCalls }}{{ range .ToolCalls }}{{ . }}{{ end }}]{{ end }}", "{"),
    ("{{ if .ToolCalls }}{{ range .ToolCalls }}\r\n{\"name\": 1}{{ end }}{{ end }}", "{"),
    ("{{ if .ToolCalls }}Lead{{ if .X }}inner{{ end }}Tail{{ end }}", "Lead"),
    ("{{ if .ToolCalls }}Action: ```json{{ end }}", "Action: ```json"),
    ("", "{"),
    ('{{ range .Messages }}{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": 1}{{ end }}{{ end }}'
     "{{ end }}", "{"),
    (CHATML, "{"),
])
def test_tool_call_tag_from_template(source: str, tag: str) -> None:
    assert ChatTemplate.parse(source).tool_call_tag == tag
    assert parse_tag(GoTemplate.parse(source).root) == tag


def feed(parser: ToolParser, chunks: list[str]) -> tuple[list[dict[str, Any]], str]:
    calls: list[dict[str, Any]] = []
    content = ""
    for chunk in chunks:
        new_calls, text = parser.add(chunk)
        calls += new_calls
        content += text
    return calls, content + parser.content()


def test_tool_parser_with_a_tag_streams_content_and_calls() -> None:
    parser = ToolParser([WEATHER_TOOL], "<tool_call>", rng=random.Random(1))
    text = ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            '</tool_call><tool_call>{"name": "get_weather", '
            '"arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>')
    chunks = [text[i:i + 3] for i in range(0, len(text), 3)]
    calls, content = feed(parser, chunks)
    assert content == "Let me check."
    assert [(c["function"]["index"], c["function"]["arguments"]) for c in calls] == \
        [(0, {"city": "Paris"}), (1, {"city": "Rome"})]
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", c["id"]) for c in calls)
    assert calls[0]["function"]["name"] == "get_weather"


def test_tool_parser_holds_back_a_partial_tag() -> None:
    parser = ToolParser([WEATHER_TOOL], "<tool_call>")
    assert parser.add("Hello <tool") == ([], "Hello ")
    assert parser.add("box") == ([], "<toolbox")


def test_tool_parser_with_brace_tag() -> None:
    tools = [WEATHER_TOOL, {"function": {"name": "get"}}]
    calls, content = feed(ToolParser(tools), ['{"name": "get_weather", "parameters": ',
                                              '{"city": "Oslo"}}'])
    assert content == "" and calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["function"]["arguments"] == {"city": "Oslo"}
    # plain text first: not a tool call, everything is content
    calls, content = feed(ToolParser(tools), ["The answer ", '{"name": "get"}'])
    assert calls == [] and content == 'The answer {"name": "get"}'
    # JSON that is no tool call comes back as content at the end
    calls, content = feed(ToolParser(tools), ['{"a": 1}'])
    assert calls == [] and content == '{"a": 1}'


def test_tool_call_id_format() -> None:
    assert re.fullmatch(r"call_[a-z0-9]{8}", tool_call_id())


# --- thinking ----------------------------------------------------------------------------------

THINKING_TEMPLATE = ("{{ range .Messages }}{{ if eq .Role \"assistant\" }}"
                     "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}"
                     "{{ else }}{{ .Content }}{{ end }}{{ end }}")


def test_thinking_tags_are_inferred() -> None:
    tmpl = ChatTemplate.parse(THINKING_TEMPLATE)
    assert tmpl.thinking_tags == ("<think>", "</think>")
    assert tmpl.uses_thinking and tmpl.capabilities == ["thinking"]
    assert infer_tags(GoTemplate.parse(CHATML).root) == ("", "")


def test_thinking_parser_splits_streamed_output() -> None:
    parser = ThinkingParser("<think>", "</think>")
    pieces = [parser.add(c) for c in ["  <thi", "nk>\n plan", " more</th", "ink>\n\n", "Answer"]]
    thinking = "".join(t for t, _ in pieces)
    content = "".join(c for _, c in pieces)
    assert (thinking, content) == ("plan more", "Answer")
    assert ThinkingParser("<think>", "</think>").add("No thinking") == ("", "No thinking")


# --- Jinja chat templates ----------------------------------------------------------------------

HF_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_jinja_chatml() -> None:
    tmpl = JinjaChatTemplate.parse(HF_CHATML)
    out = tmpl.render([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}])
    assert out == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                   "<|im_start|>assistant\n")
    assert tmpl.render([{"role": "user", "content": "x"}], add_generation_prompt=False) == \
        "<|im_start|>user\nx<|im_end|>\n"


def test_jinja_variables_tools_and_helpers() -> None:
    source = ("{{ bos_token }}{% if tools %}{{ tools | tojson }}{% endif %}"
              "{% for m in messages %}{% if m.tool_calls %}"
              "{% for c in m.tool_calls %}{{ c.function.name }}{{ c.function.arguments | tojson }}"
              "{% endfor %}{% else %}[{{ m.role }}:{{ m.content }}]{% endif %}{% endfor %}"
              "{{ strftime_now('%Y') }}{{ eos_token }}")
    tmpl = JinjaChatTemplate.parse(source, bos_token="<s>", eos_token="</s>",
                                   clock=lambda: datetime(2024, 1, 2))
    out = tmpl.render(TOOL_CHAT[:2], tools=[{"type": "function", "function": {"name": "f<>"}}])
    assert out == ('<s>[{"type": "function", "function": {"name": "f<>"}}]'
                   '[user:Weather in Paris?]get_weather{"unit": "c", "city": "Paris", "n": 1}'
                   "2024</s>")


def test_jinja_errors_are_template_errors() -> None:
    with pytest.raises(TemplateError):
        JinjaChatTemplate.parse("{% for x in %}")
    failing = JinjaChatTemplate.parse("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        failing.render([])
    with pytest.raises(TemplateError):
        JinjaChatTemplate.parse("{{ messages.__class__.__mro__ }}").render([])


@pytest.mark.parametrize("source", [
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ 'x'.center(1000000000) }}",
    "{{ 'x' | center(1000000000) }}",
    "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{{ '%999999999s' % 'x' }}",
    "{{ '%*s' % (1000000000, 'x') }}",
    "{{ '{:>{w}}'.format('x', w=1000000000) }}",
    "{{ ('\\n' * 50000) | indent(50000) }}",
    "{{ lipsum(1000000) }}",
    "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
    "{% endfor %}",
    "{{ 'xxxxxxxxxxxxxxxxxxxx' | replace('x', 'xxxxxxxxxxxxxxxxxxxx') | replace('x', 'yyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') "
    "| replace('y', 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz') }}",
])
def test_jinja_hostile_templates_fail_quickly(source: str) -> None:
    limits = Limits(max_output=100_000, max_steps=200_000, max_seconds=5)
    with pytest.raises(TemplateError):
        JinjaChatTemplate.parse(source, limits=limits).render([])


def test_jinja_capabilities() -> None:
    assert jinja_capabilities(HF_CHATML) == []
    assert jinja_capabilities("{% if tools %}<think></think>{% endif %}") == ["tools", "thinking"]


def _gguf_string(path: Path, key: str) -> str:
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields[key]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def test_smollm2_gguf_chat_template(smollm2_gguf: Path) -> None:
    source = _gguf_string(smollm2_gguf, "tokenizer.chat_template")
    tmpl = JinjaChatTemplate.parse(source)
    assert tmpl.render([{"role": "user", "content": "Hi!"}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    assert tmpl.render(chat).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_values_execute_directly() -> None:
    tmpl = ChatTemplate.parse(CHATML)
    assert tmpl.execute(Values(messages=[{"role": "user", "content": "x"}])) == \
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
