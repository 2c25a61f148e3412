"""GGUF header metadata: key/value pairs and tensor descriptions, as plain Python values.

Built on the ``gguf`` package's :class:`gguf.GGUFReader`, hardened for files we did not write: the
stock reader trusts every length in the file (a short read silently yields a short array, so a
hostile element count can loop for ever) and builds one numpy view per array element (seconds per
call for a tokenizer's 100k strings). The subclass below bounds every read and reads an array as
one span, decoded only when the caller wants its values.

Nothing here reads tensor data: the file is memory-mapped and only its header pages are touched.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ollama's own decoder refuses arrays longer than this; no real tokenizer comes close.
MAX_ARRAY_LENGTH = 64 << 20
# Far above any real model (the largest have a few thousand of each), far below what a garbage
# count would make the reader try.
MAX_KEY_VALUES = 1 << 20
MAX_TENSORS = 1 << 20

# The pseudo-fields GGUFReader adds for the header's own numbers; not metadata.
_HEADER_FIELDS = frozenset({"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"})


class InvalidGGUF(ValueError):
    """A file that is not a readable GGUF: wrong magic, truncated, or inconsistent."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str  # ggml's name for the type, e.g. "Q4_K", "F32"
    shape: tuple[int, ...]  # dimensions in file order, innermost first

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says. ``kv`` keeps file order; an array longer than the reader's
    ``array_limit`` is None (its values were never decoded)."""

    kv: dict[str, Any]
    tensors: tuple[TensorInfo, ...]

    @property
    def parameter_count(self) -> int:
        return sum(tensor.elements for tensor in self.tensors)

    @property
    def architecture(self) -> str:
        value = self.kv.get("general.architecture")
        return value if isinstance(value, str) else ""

    def arch_value(self, key: str) -> Any:
        """``<architecture>.<key>``, the way model code looks up per-architecture settings."""
        return self.kv.get(f"{self.architecture}.{key}")


def read_gguf(path: Path, *, array_limit: int | None = None) -> GGUFInfo:
    """Read the header of the GGUF at ``path``. Raises :class:`InvalidGGUF`, and nothing else.

    ``array_limit``: arrays with more elements come back as None, undecoded (None: decode all).
    """
    import gguf  # numpy comes with it: too slow an import for the daemon's start-up

    reader_class = _bounded_reader_class()
    try:
        reader = reader_class(path)
        kv = {name: _field_value(gguf, field, array_limit)
              for name, field in reader.fields.items() if name not in _HEADER_FIELDS}
        tensors = tuple(TensorInfo(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape))
                        for t in reader.tensors)
    except Exception as exc:  # every failure on a hostile file is the same failure to callers
        raise InvalidGGUF(f"{path} is not a readable GGUF file: {_describe(exc)}") from None
    return GGUFInfo(kv, tensors)


def file_type_name(value: object) -> str:
    """Ollama's name for a ``general.file_type`` number ("Q4_K_M", "F16"), or "unknown"."""
    import gguf

    if not isinstance(value, int) or isinstance(value, bool):
        return "unknown"
    try:
        member = gguf.LlamaFileType(value)
    except ValueError:
        return "unknown"
    if member.name == "GUESSED":
        return "unknown"
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _field_value(gguf: Any, field: Any, array_limit: int | None) -> Any:
    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        item_kind, payload = field.types[1], field.parts[field.data[0]]
        raw_count = field.parts[field.data[0] - 1]
        count = int(raw_count[0])
        if array_limit is not None and count > array_limit:
            return None
        if item_kind == gguf.GGUFValueType.STRING:
            spans = _string_spans(memoryview(payload), 0, count,
                                  _little(raw_count.dtype.byteorder))
            return [_text(payload[pos:pos + size]) for pos, size in spans]
        if item_kind == gguf.GGUFValueType.FLOAT32:
            return [_float32(item) for item in payload]
        if item_kind == gguf.GGUFValueType.BOOL:
            return [bool(item) for item in payload.tolist()]
        return payload.tolist()
    value = field.parts[-1]
    if kind == gguf.GGUFValueType.STRING:
        return _text(value)
    if kind == gguf.GGUFValueType.FLOAT32:
        return _float32(value[0])
    if kind == gguf.GGUFValueType.BOOL:
        return bool(value[0])
    return value[0].item()


def _float32(value: Any) -> float:
    # numpy prints a float32 in its shortest round-trip form, as Go's encoder does; going through
    # that text keeps 1e-05 from becoming 9.999999747378752e-06.
    return float(str(value))


def _text(data: Any) -> str:
    # Go keeps invalid UTF-8 in its strings and its JSON encoder writes U+FFFD for it.
    return bytes(data).decode("utf-8", errors="replace")


_U64 = {True: struct.Struct("<Q"), False: struct.Struct(">Q")}


def _string_spans(view: memoryview, start: int, count: int,
                  little: bool) -> Iterator[tuple[int, int]]:
    """(offset, size) of each of ``count`` length-prefixed strings at ``start``, all in ``view``."""
    length, pos, end = _U64[little], start, len(view)
    for _ in range(count):
        if pos + 8 > end:
            raise EOFError("string array runs past the end")
        (size,) = length.unpack_from(view, pos)
        pos += 8
        if pos + size > end:
            raise EOFError("string runs past the end")
        yield pos, size
        pos += size


def _little(byteorder: str) -> bool:
    """Whether a numpy byte-order character means little-endian on this host."""
    if byteorder in ("=", "|"):
        return sys.byteorder == "little"
    return byteorder == "<"


@functools.cache
def _bounded_reader_class() -> type:
    """GGUFReader with bounded reads and single-span arrays (defined on first use: see import)."""
    import gguf
    import numpy as np

    value_type = gguf.GGUFValueType

    class BoundedReader(gguf.GGUFReader):  # type: ignore[misc]
        def _get(self, offset: int, dtype: Any, count: int = 1,
                 override_order: Any = None) -> Any:
            array = super()._get(offset, dtype, count, override_order)
            if len(array) != int(count):
                raise EOFError(f"{int(count)} values at offset {offset} run past the end")
            return array

        def _build_fields(self, offs: int, count: int) -> int:
            if int(count) > MAX_KEY_VALUES:
                raise ValueError(f"{int(count)} key/value pairs is not plausible")
            return super()._build_fields(offs, count)

        def _build_tensor_info(self, offs: int, count: int) -> Any:
            if int(count) > MAX_TENSORS:
                raise ValueError(f"{int(count)} tensors is not plausible")
            return super()._build_tensor_info(offs, count)

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
            if raw_type != value_type.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_item_type = self._get(orig_offs, np.uint32)
            raw_count = self._get(orig_offs + 4, np.uint64)
            item_type, count = value_type(int(raw_item_type[0])), int(raw_count[0])
            if count > MAX_ARRAY_LENGTH:
                raise ValueError(f"array of {count} elements is not plausible")
            start = orig_offs + 12
            numpy_type = self.gguf_scalar_to_np.get(item_type)
            if numpy_type is not None:
                payload = self._get(start, numpy_type, count)
            elif item_type == value_type.STRING:
                payload = self._get(start, np.uint8, self._strings_size(start, count))
            else:
                # Ollama refuses nested arrays as well; no converter writes them.
                raise ValueError(f"arrays of {item_type.name} are not supported")
            # Parts: element type, count, then every element's bytes as one span; the caller
            # decodes the span (see _field_value), not ReaderField.contents.
            parts = [raw_item_type, raw_count, payload]
            return 12 + int(payload.nbytes), parts, [2], [value_type.ARRAY, item_type]

        def _strings_size(self, start: int, count: int) -> int:
            little = (sys.byteorder == "little") == (self.byte_order == "I")
            end = start
            for pos, size in _string_spans(memoryview(self.data), start, count, little):
                end = pos + size
            return end - start

    return BoundedReader
