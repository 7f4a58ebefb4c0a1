"""Reconstruct ``.proto`` source text from a serialized ``FileDescriptorProto``.

The input is one of:

* a serialized ``FileDescriptorProto`` (``*.binpb`` / ``*.pb``),
* a serialized ``FileDescriptorSet`` (pick the file with ``--file``), or
* a generated Python module (``*.py``) that embeds the serialized descriptor as
  the first ``bytes`` literal passed to ``AddSerializedFile(...)`` (official
  protobuf runtime) or ``file_desc(...)`` (protobuf-py runtime).

Everything a descriptor records is printed back: syntax/edition, package, imports,
file options, messages (nested types, oneofs, labels, proto3 ``optional``, maps,
groups, reserved ranges and names, extension ranges), enums, services,
``extend`` blocks and all options, custom options (extensions) included.

Custom options are kept as unknown fields in a plain ``descriptor_pb2`` message.
To print them the file (and its dependencies) is loaded into a private
``DescriptorPool``; the options are re-parsed with message classes from that pool,
which know the extensions, and printed in protobuf text format.

Comments and the original layout are not part of a descriptor and are lost.

Example::

    python descriptor_to_proto.py validate_pb.py -o validate.proto
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import math
import re
import struct
import sys
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor

if TYPE_CHECKING:
    from google.protobuf.message import Message

FDP = descriptor_pb2.FieldDescriptorProto

_SCALAR_TYPE_NAMES: dict[int, str] = {
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64",
    FDP.TYPE_SINT32: "sint32",
    FDP.TYPE_SINT64: "sint64",
}

_LABEL_NAMES: dict[int, str] = {
    FDP.LABEL_OPTIONAL: "optional",
    FDP.LABEL_REQUIRED: "required",
    FDP.LABEL_REPEATED: "repeated",
}

_FIELD_NUMBER_MAX = 536870911  # 2^29 - 1
_MESSAGE_SET_NUMBER_MAX = 2147483646  # message-set extensions may go up to INT32_MAX - 1
_ENUM_NUMBER_MAX = 2147483647

_INDENT = "  "
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_LICENSE_APACHE_2 = """\
Copyright {holder}

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License."""


# --------------------------------------------------------------------------- input


def _bytes_value(node: ast.expr) -> bytes | None:
    """Evaluate a bytes literal, allowing ``b"..." + b"..."`` concatenation."""
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _bytes_value(node.left), _bytes_value(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def extract_from_python(source: str) -> bytes:
    """Return the serialized descriptor embedded in a generated Python module."""
    wanted = {"AddSerializedFile", "file_desc"}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in wanted:
            data = _bytes_value(node.args[0])
            if data is not None:
                return data
    msg = "no AddSerializedFile(b'...') / file_desc(b'...') call found"
    raise ValueError(msg)


def load_files(
    data: bytes, wanted: str | None
) -> tuple[list[descriptor_pb2.FileDescriptorProto], str]:
    """Decode ``data`` as a FileDescriptorSet or a single FileDescriptorProto.

    Returns all files found and the name of the file to print.
    """
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(data)
        as_set = len(fds.file) > 0 and all(f.name for f in fds.file)
    except Exception:  # any decode error means "not a set"
        as_set = False
    if as_set:
        files = list(fds.file)
        names = [f.name for f in files]
        if wanted is None:
            if len(files) != 1:
                msg = f"FileDescriptorSet holds {len(files)} files; choose one with --file: {names}"
                raise ValueError(msg)
            wanted = names[0]
        if wanted not in names:
            msg = f"{wanted!r} is not in the FileDescriptorSet: {names}"
            raise ValueError(msg)
        return files, wanted
    single = descriptor_pb2.FileDescriptorProto.FromString(data)
    if not single.name:
        msg = "input is neither a FileDescriptorSet nor a named FileDescriptorProto"
        raise ValueError(msg)
    if wanted is not None and wanted != single.name:
        msg = f"input describes {single.name!r}, not {wanted!r}"
        raise ValueError(msg)
    return [single], single.name


def _well_known_file(name: str) -> descriptor_pb2.FileDescriptorProto | None:
    """Find ``name`` among the descriptors shipped with the protobuf runtime."""
    default = descriptor_pool.Default()
    if name.endswith(".proto"):
        module = name[: -len(".proto")].replace("/", ".") + "_pb2"
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    try:
        found = default.FindFileByName(name)
    except KeyError:
        return None
    out = descriptor_pb2.FileDescriptorProto()
    found.CopyToProto(out)
    return out


def build_pool(
    files: Sequence[descriptor_pb2.FileDescriptorProto],
) -> tuple[descriptor_pool.DescriptorPool, list[descriptor_pb2.FileDescriptorProto]]:
    """Load ``files`` (plus missing well-known dependencies) into a fresh pool.

    Returns the pool and every file added to it, in dependency order.
    """
    by_name = {f.name: f for f in files}
    pool = descriptor_pool.DescriptorPool()
    added: list[descriptor_pb2.FileDescriptorProto] = []
    done: set[str] = set()

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            msg = f"import cycle: {' -> '.join((*chain, name))}"
            raise ValueError(msg)
        proto = by_name.get(name) or _well_known_file(name)
        if proto is None:
            msg = f"dependency {name!r} is neither in the input nor a well-known file"
            raise ValueError(msg)
        deps = list(proto.dependency)
        deps += list(getattr(proto, "option_dependency", []))
        for dep in deps:
            add(dep, (*chain, name))
        pool.Add(proto)
        added.append(proto)
        done.add(name)

    for f in files:
        add(f.name, ())
    message_factory.GetMessageClassesForFiles([f.name for f in added], pool)
    return pool, added


# ------------------------------------------------------------------------- naming


@dataclass
class Symbols:
    """Every fully-qualified name known to the pool (without leading dot)."""

    names: set[str] = field(default_factory=set)

    def add_file(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        parts = proto.package.split(".") if proto.package else []
        for i in range(1, len(parts) + 1):
            self.names.add(".".join(parts[:i]))
        scope = proto.package
        for msg in proto.message_type:
            self._add_message(scope, msg)
        for enum in proto.enum_type:
            self._add_enum(scope, enum)
        for ext in proto.extension:
            self.names.add(_join(scope, ext.name))
        for svc in proto.service:
            name = _join(scope, svc.name)
            self.names.add(name)
            for method in svc.method:
                self.names.add(_join(name, method.name))

    def _add_message(self, scope: str, msg: descriptor_pb2.DescriptorProto) -> None:
        name = _join(scope, msg.name)
        self.names.add(name)
        for f in (*msg.field, *msg.extension):
            self.names.add(_join(name, f.name))
        for oneof in msg.oneof_decl:
            self.names.add(_join(name, oneof.name))
        for nested in msg.nested_type:
            self._add_message(name, nested)
        for enum in msg.enum_type:
            self._add_enum(name, enum)

    def _add_enum(self, scope: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.names.add(_join(scope, enum.name))
        for value in enum.value:  # enum values are siblings of their enum
            self.names.add(_join(scope, value.name))

    def relative(self, full_name: str, scope: str) -> str:
        """Shortest name that resolves to ``full_name`` when used inside ``scope``.

        ``scope`` is the fully-qualified name of the enclosing message (or the
        package). Resolution follows protoc: the first component is looked up in
        ``scope``, then in each enclosing scope; a candidate is accepted only if
        the first scope holding its first component is the one that leads to
        ``full_name`` (conservative: any other hit rejects the candidate).
        """
        full_name = full_name.removeprefix(".")
        parts = full_name.split(".")
        scopes = _scope_chain(scope)
        for n in range(1, len(parts) + 1):
            candidate = parts[-n:]
            first = candidate[0]
            for s in scopes:
                if _join(s, first) in self.names:
                    if _join(s, ".".join(candidate)) == full_name:
                        return ".".join(candidate)
                    break
        return "." + full_name


def _join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


def _scope_chain(scope: str) -> list[str]:
    chain = []
    while scope:
        chain.append(scope)
        scope = scope.rpartition(".")[0]
    chain.append("")
    return chain


def _default_json_name(name: str) -> str:
    out: list[str] = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


# ------------------------------------------------------------------------ options


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quote(data: str | bytes) -> str:
    """A double-quoted string literal valid in ``.proto`` files and text format.

    Text is kept as UTF-8; only backslash, double quote and control characters
    are escaped. Bytes outside printable ASCII become octal escapes.
    """
    out: list[str] = []
    if isinstance(data, str):
        for ch in data:
            if ch in _ESCAPES:
                out.append(_ESCAPES[ch])
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\{ord(ch):03o}")
            else:
                out.append(ch)
    else:
        for byte in data:
            ch = chr(byte)
            if ch in _ESCAPES:
                out.append(_ESCAPES[ch])
            elif 0x20 <= byte < 0x7F:
                out.append(ch)
            else:
                out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _format_float(value: float, single: bool) -> str:
    """Shortest text that parses back to ``value`` (as float32 when ``single``)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if single:
        packed = struct.pack("<f", value)
        for digits in range(1, 10):
            text = f"{value:.{digits}g}"
            if struct.pack("<f", float(text)) == packed:
                return text
    return repr(value)


def _scalar_text(fd: FieldDescriptor, value: object) -> str:
    """A scalar (non-message) value as written in options and text format."""
    if fd.type == FieldDescriptor.TYPE_ENUM:
        assert isinstance(value, int)
        assert fd.enum_type is not None
        enum_value = fd.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else str(value)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        assert isinstance(value, str | bytes)
        return _quote(value)
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        assert isinstance(value, float | int)
        return _format_float(float(value), fd.type == FieldDescriptor.TYPE_FLOAT)
    return str(value)


def _is_message(fd: FieldDescriptor) -> bool:
    return fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP)


def _message_type(fd: FieldDescriptor) -> Descriptor:
    assert fd.message_type is not None
    return fd.message_type


def _is_map(fd: FieldDescriptor) -> bool:
    return _is_message(fd) and bool(_message_type(fd).GetOptions().map_entry)


def text_format_lines(msg: Message) -> list[str]:
    """The body of ``msg`` in protobuf text format, one field per line."""
    lines: list[str] = []
    for fd, value in msg.ListFields():
        if fd.is_extension:
            name = f"[{fd.full_name}]"
        elif fd.type == FieldDescriptor.TYPE_GROUP:
            name = _message_type(fd).name
        else:
            name = fd.name
        items = list(value) if fd.is_repeated else [value]
        if fd.is_repeated and _is_map(fd):
            items = [_map_entry(fd, k, value[k]) for k in value]
        for item in items:
            if _is_message(fd):
                body = text_format_lines(item)
                if body:
                    lines.append(f"{name} {{")
                    lines += [_INDENT + line for line in body]
                    lines.append("}")
                else:
                    lines.append(f"{name} {{}}")
            else:
                lines.append(f"{name}: {_scalar_text(fd, item)}")
    return lines


def _map_entry(fd: FieldDescriptor, key: object, value: object) -> Message:
    entry_type = _message_type(fd)
    entry = message_factory.GetMessageClass(entry_type)()
    setattr(entry, "key", key)  # noqa: B010 - generic entry message
    if _is_message(entry_type.fields_by_name["value"]):
        entry.value.CopyFrom(value)  # type: ignore[attr-defined]
    else:
        setattr(entry, "value", value)  # noqa: B010
    return entry


class OptionPrinter:
    """Turns an options message into ``name = value`` assignments."""

    def __init__(self, pool: descriptor_pool.DescriptorPool, symbols: Symbols) -> None:
        self._pool = pool
        self._symbols = symbols

    def reparse(self, options: Message) -> Message:
        """Parse ``options`` again with the pool's class so extensions are known."""
        descriptor = self._pool.FindMessageTypeByName(options.DESCRIPTOR.full_name)
        cls = message_factory.GetMessageClass(descriptor)
        parsed = cls.FromString(options.SerializeToString())
        unknown = _unknown_field_numbers(parsed)
        if unknown:
            msg = f"{options.DESCRIPTOR.full_name} has unresolvable fields {sorted(unknown)}"
            raise ValueError(msg)
        return parsed

    def assignments(self, options: Message, scope: str) -> list[tuple[str, str]]:
        """Return ``(option name, value text)`` pairs for every set option.

        Singular sub-messages are flattened into dotted names
        (``(ext).sub.field = 1``); repeated fields produce one assignment per
        element; repeated messages print their elements in text format.
        """
        out: list[tuple[str, str]] = []
        parsed = self.reparse(options)
        for fd, value in parsed.ListFields():
            self._flatten(self._field_ref(fd, scope), fd, value, scope, out)
        return out

    def _field_ref(self, fd: FieldDescriptor, scope: str) -> str:
        if fd.is_extension:
            return "(" + self._symbols.relative(fd.full_name, scope).removeprefix(".") + ")"
        return fd.name

    def _flatten(
        self,
        path: str,
        fd: FieldDescriptor,
        value: object,
        scope: str,
        out: list[tuple[str, str]],
    ) -> None:
        if _is_repeated(fd):
            assert isinstance(value, Iterable)
            for item in value:
                out.append((path, self._value(fd, item)))
            return
        if fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            sub = value
            fields = sub.ListFields()  # type: ignore[attr-defined]
            if not fields or _unknown_field_numbers(sub):  # type: ignore[arg-type]
                out.append((path, self._value(fd, sub)))
                return
            for sub_fd, sub_value in fields:
                self._flatten(
                    f"{path}.{self._field_ref(sub_fd, scope)}", sub_fd, sub_value, scope, out
                )
            return
        out.append((path, self._value(fd, value)))

    def _value(self, fd: FieldDescriptor, value: object) -> str:
        if _is_message(fd):
            body = text_format_lines(value)  # type: ignore[arg-type]
            return "{\n" + "\n".join(body) + "\n}" if body else "{}"
        return _scalar_text(fd, value)


def _is_repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def _unknown_field_numbers(msg: Message) -> set[int]:
    """Field numbers the message (or any sub-message) could not interpret."""
    unknown = unknown_fields.UnknownFieldSet(msg)
    numbers: set[int] = {unknown[i].field_number for i in range(len(unknown))}
    for fd, value in msg.ListFields():
        if fd.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            continue
        if _is_map(fd):
            continue
        items = value if _is_repeated(fd) else [value]
        for item in items:
            numbers |= _unknown_field_numbers(item)
    return numbers


def _indent_block(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def _render_assignment(name: str, value: str, indent: str) -> str:
    """``name = value`` where multi-line values are indented under ``indent``."""
    if "\n" not in value:
        return f"{name} = {value}"
    head, _, rest = value.partition("\n")
    body, _, last = rest.rpartition("\n")
    lines = [f"{name} = {head}"]
    lines += [_indent_block(line, indent + _INDENT) if line else line for line in body.split("\n")]
    lines.append(indent + last)
    return "\n".join(lines)


# ------------------------------------------------------------------------ printer


@dataclass
class Printer:
    """Prints one ``FileDescriptorProto`` as ``.proto`` source."""

    file: descriptor_pb2.FileDescriptorProto
    options: OptionPrinter
    symbols: Symbols
    lines: list[str] = field(default_factory=list)

    # -- helpers ---------------------------------------------------------------

    @property
    def _syntax(self) -> str:
        return self.file.syntax or "proto2"

    def _emit(self, depth: int, text: str = "") -> None:
        self.lines.append(_INDENT * depth + text if text else "")

    def _emit_options(self, depth: int, options: Message, scope: str) -> None:
        indent = _INDENT * depth
        for name, value in self.options.assignments(options, scope):
            self._emit(depth, "option " + _render_assignment(name, value, indent) + ";")

    def _bracket(self, pairs: Sequence[tuple[str, str]], depth: int) -> str:
        """``[a = b, c = d]``; one option per line when any value spans lines."""
        if not pairs:
            return ""
        if all("\n" not in v for _, v in pairs):
            one_line = ", ".join(f"{n} = {v}" for n, v in pairs)
            if len(one_line) <= 80:
                return f" [{one_line}]"
        inner = _INDENT * (depth + 1)
        items = [inner + _render_assignment(n, v, inner) for n, v in pairs]
        return " [\n" + ",\n".join(items) + "\n" + _INDENT * depth + "]"

    def _type_ref(self, type_name: str, scope: str) -> str:
        return self.symbols.relative(type_name, scope)

    # -- file ------------------------------------------------------------------

    def print_file(self, header: Sequence[str]) -> str:
        f = self.file
        for line in header:
            self.lines.append(("// " + line).rstrip())
        if header:
            self._emit(0)
        if self._syntax == "editions":
            edition = descriptor_pb2.Edition.Name(f.edition).removeprefix("EDITION_")
            self._emit(0, f'edition = "{edition}";')
        else:
            self._emit(0, f'syntax = "{self._syntax}";')
        self._emit(0)
        if f.package:
            self._emit(0, f"package {f.package};")
            self._emit(0)
        self._print_imports()
        if f.HasField("options"):
            self._emit_options(0, f.options, f.package)
            self._emit(0)
        scope = f.package
        for msg in f.message_type:
            self._print_message(0, msg, scope)
            self._emit(0)
        for enum in f.enum_type:
            self._print_enum(0, enum, scope)
            self._emit(0)
        for extendee, exts in _extension_runs(f.extension):
            self._print_extend(0, extendee, exts, scope, [])
            self._emit(0)
        for svc in f.service:
            self._print_service(svc, scope)
            self._emit(0)
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        return "\n".join(self.lines) + "\n"

    def _print_imports(self) -> None:
        f = self.file
        public = set(f.public_dependency)
        weak = set(f.weak_dependency)
        for i, dep in enumerate(f.dependency):
            modifier = "public " if i in public else "weak " if i in weak else ""
            self._emit(0, f'import {modifier}"{dep}";')
        for dep in getattr(f, "option_dependency", []):
            self._emit(0, f'import option "{dep}";')
        if f.dependency or getattr(f, "option_dependency", []):
            self._emit(0)

    # -- messages --------------------------------------------------------------

    def _print_message(
        self,
        depth: int,
        msg: descriptor_pb2.DescriptorProto,
        scope: str,
        group_field: descriptor_pb2.FieldDescriptorProto | None = None,
    ) -> None:
        name = _join(scope, msg.name)
        if group_field is None:
            self._emit(depth, f"message {msg.name} {{")
        else:
            self._emit(depth, self._field_head(group_field, scope, depth) + " {")
        inner = depth + 1
        if msg.HasField("options"):
            self._emit_options(inner, msg.options, name)

        map_entries = {_join(name, n.name) for n in msg.nested_type if n.options.map_entry}
        groups = {f.type_name.removeprefix("."): f for f in msg.field if f.type == FDP.TYPE_GROUP}
        nested = {_join(name, n.name): n for n in msg.nested_type}

        synthetic = _synthetic_oneofs(msg)
        printed_oneofs: set[int] = set()
        for fld in msg.field:
            if fld.HasField("oneof_index") and fld.oneof_index not in synthetic:
                idx = fld.oneof_index
                if idx in printed_oneofs:
                    continue
                printed_oneofs.add(idx)
                self._print_oneof(inner, msg, idx, name, nested)
                continue
            self._print_field(inner, fld, name, nested, map_entries=map_entries)

        for nested_msg in msg.nested_type:
            full = _join(name, nested_msg.name)
            if full in map_entries or full in groups:
                continue
            self._print_message(inner, nested_msg, name)
        for enum in msg.enum_type:
            self._print_enum(inner, enum, name)
        for extendee, exts in _extension_runs(msg.extension):
            self._print_extend(inner, extendee, exts, name, msg.nested_type)
        self._print_extension_ranges(inner, msg, name)
        self._print_reserved(
            inner,
            [(r.start, r.end - 1) for r in msg.reserved_range],
            msg.reserved_name,
            _MESSAGE_SET_NUMBER_MAX if msg.options.message_set_wire_format else _FIELD_NUMBER_MAX,
        )
        self._emit(depth, "}")

    def _print_oneof(
        self,
        depth: int,
        msg: descriptor_pb2.DescriptorProto,
        index: int,
        scope: str,
        nested: dict[str, descriptor_pb2.DescriptorProto],
    ) -> None:
        oneof = msg.oneof_decl[index]
        self._emit(depth, f"oneof {oneof.name} {{")
        if oneof.HasField("options"):
            self._emit_options(depth + 1, oneof.options, scope)
        for fld in msg.field:
            if fld.HasField("oneof_index") and fld.oneof_index == index:
                self._print_field(depth + 1, fld, scope, nested, in_oneof=True)
        self._emit(depth, "}")

    def _field_label(self, fld: descriptor_pb2.FieldDescriptorProto, in_oneof: bool) -> str:
        if fld.label == FDP.LABEL_REPEATED:
            return "repeated "
        if in_oneof:
            return ""
        if self._syntax == "proto2":
            return _LABEL_NAMES[fld.label] + " "
        if self._syntax == "proto3" and fld.proto3_optional:
            return "optional "
        return ""

    def _field_type(self, fld: descriptor_pb2.FieldDescriptorProto, scope: str) -> str:
        if fld.type in _SCALAR_TYPE_NAMES:
            return _SCALAR_TYPE_NAMES[fld.type]
        return self._type_ref(fld.type_name, scope)

    def _field_head(
        self,
        fld: descriptor_pb2.FieldDescriptorProto,
        scope: str,
        depth: int,
        in_oneof: bool = False,
    ) -> str:
        """``label type name = number [options]`` without the trailing ``;``/body."""
        label = self._field_label(fld, in_oneof)
        if fld.type == FDP.TYPE_GROUP and self._syntax != "editions":
            group_name = fld.type_name.rsplit(".", 1)[-1]
            head = f"{label}group {group_name} = {fld.number}"
        else:
            head = f"{label}{self._field_type(fld, scope)} {fld.name} = {fld.number}"
        return head + self._bracket(self._field_option_pairs(fld, scope), depth)

    def _field_option_pairs(
        self, fld: descriptor_pb2.FieldDescriptorProto, scope: str
    ) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        if fld.HasField("default_value"):
            pairs.append(("default", _default_value(fld)))
        if (
            fld.HasField("json_name")
            and not fld.HasField("extendee")
            and fld.json_name != _default_json_name(fld.name)
        ):
            pairs.append(("json_name", _quote(fld.json_name)))
        if fld.HasField("options"):
            pairs += self.options.assignments(fld.options, scope)
        return pairs

    def _print_field(
        self,
        depth: int,
        fld: descriptor_pb2.FieldDescriptorProto,
        scope: str,
        nested: dict[str, descriptor_pb2.DescriptorProto],
        *,
        map_entries: frozenset[str] | set[str] = frozenset(),
        in_oneof: bool = False,
    ) -> None:
        type_name = fld.type_name.removeprefix(".")
        if fld.type == FDP.TYPE_GROUP and self._syntax != "editions":
            self._print_message(depth, nested[type_name], scope, group_field=fld)
            return
        if type_name in map_entries and fld.label == FDP.LABEL_REPEATED:
            entry = nested[type_name]
            key, value = entry.field[0], entry.field[1]
            entry_scope = _join(scope, entry.name)
            head = (
                f"map<{self._field_type(key, entry_scope)}, {self._field_type(value, entry_scope)}>"
                f" {fld.name} = {fld.number}"
            )
            self._emit(
                depth, head + self._bracket(self._field_option_pairs(fld, scope), depth) + ";"
            )
            return
        self._emit(depth, self._field_head(fld, scope, depth, in_oneof) + ";")

    def _print_extend(
        self,
        depth: int,
        extendee: str,
        exts: Sequence[descriptor_pb2.FieldDescriptorProto],
        scope: str,
        nested_types: Iterable[descriptor_pb2.DescriptorProto],
    ) -> None:
        nested = {_join(scope, n.name): n for n in nested_types}
        self._emit(depth, f"extend {self._type_ref(extendee, scope)} {{")
        for ext in exts:
            self._print_field(depth + 1, ext, scope, nested)
        self._emit(depth, "}")

    def _print_extension_ranges(
        self, depth: int, msg: descriptor_pb2.DescriptorProto, scope: str
    ) -> None:
        max_number = (
            _MESSAGE_SET_NUMBER_MAX if msg.options.message_set_wire_format else _FIELD_NUMBER_MAX
        )
        for rng in msg.extension_range:
            text = _range_text(rng.start, rng.end - 1, max_number)
            pairs: list[tuple[str, str]] = []
            if rng.HasField("options"):
                pairs = self.options.assignments(rng.options, scope)
            self._emit(depth, f"extensions {text}" + self._bracket(pairs, depth) + ";")

    def _print_reserved(
        self, depth: int, ranges: Sequence[tuple[int, int]], names: Sequence[str], max_number: int
    ) -> None:
        if ranges:
            text = ", ".join(_range_text(lo, hi, max_number) for lo, hi in ranges)
            self._emit(depth, f"reserved {text};")
        if names:
            bare = self._syntax == "editions"  # editions require identifiers, not strings
            if bare and all(_IDENT_RE.match(n) for n in names):
                self._emit(depth, f"reserved {', '.join(names)};")
            else:
                self._emit(depth, f"reserved {', '.join(_quote(n) for n in names)};")

    # -- enums -----------------------------------------------------------------

    def _print_enum(self, depth: int, enum: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        self._emit(depth, f"enum {enum.name} {{")
        inner = depth + 1
        name = _join(scope, enum.name)
        if enum.HasField("options"):
            self._emit_options(inner, enum.options, name)
        for value in enum.value:
            pairs: list[tuple[str, str]] = []
            if value.HasField("options"):
                pairs = self.options.assignments(value.options, scope)
            self._emit(inner, f"{value.name} = {value.number}" + self._bracket(pairs, inner) + ";")
        self._print_reserved(
            inner,
            [(r.start, r.end) for r in enum.reserved_range],  # enum ranges are inclusive
            enum.reserved_name,
            _ENUM_NUMBER_MAX,
        )
        self._emit(depth, "}")

    # -- services --------------------------------------------------------------

    def _print_service(self, svc: descriptor_pb2.ServiceDescriptorProto, scope: str) -> None:
        self._emit(0, f"service {svc.name} {{")
        name = _join(scope, svc.name)
        if svc.HasField("options"):
            self._emit_options(1, svc.options, name)
        for method in svc.method:
            req = ("stream " if method.client_streaming else "") + self._type_ref(
                method.input_type, name
            )
            resp = ("stream " if method.server_streaming else "") + self._type_ref(
                method.output_type, name
            )
            head = f"rpc {method.name}({req}) returns ({resp})"
            if method.HasField("options") and method.options.ByteSize():
                self._emit(1, head + " {")
                self._emit_options(2, method.options, name)
                self._emit(1, "}")
            else:
                self._emit(1, head + ";")
        self._emit(0, "}")


def _synthetic_oneofs(msg: descriptor_pb2.DescriptorProto) -> set[int]:
    """Indexes of oneofs that only exist to carry a proto3 ``optional`` field."""
    members: dict[int, list[descriptor_pb2.FieldDescriptorProto]] = {}
    for fld in msg.field:
        if fld.HasField("oneof_index"):
            members.setdefault(fld.oneof_index, []).append(fld)
    return {idx for idx, flds in members.items() if len(flds) == 1 and flds[0].proto3_optional}


def _extension_runs(
    exts: Iterable[descriptor_pb2.FieldDescriptorProto],
) -> Iterator[tuple[str, list[descriptor_pb2.FieldDescriptorProto]]]:
    """Group consecutive extensions of the same extendee, keeping their order."""
    current: str | None = None
    run: list[descriptor_pb2.FieldDescriptorProto] = []
    for ext in exts:
        if ext.extendee != current and run:
            assert current is not None
            yield current, run
            run = []
        current = ext.extendee
        run.append(ext)
    if run:
        assert current is not None
        yield current, run


def _default_value(fld: descriptor_pb2.FieldDescriptorProto) -> str:
    """The ``[default = ...]`` value; the descriptor stores it as text."""
    value = fld.default_value
    if fld.type == FDP.TYPE_STRING:
        return _quote(value)
    if fld.type == FDP.TYPE_BYTES:
        return f'"{value}"'  # already C-escaped in the descriptor
    return value


def _range_text(lo: int, hi: int, max_number: int) -> str:
    if hi >= max_number and lo != hi:
        return f"{lo} to max"
    return str(lo) if lo == hi else f"{lo} to {hi}"


# --------------------------------------------------------------------------- main


def render(data: bytes, wanted: str | None = None, header: Sequence[str] = ()) -> str:
    """Return ``.proto`` source for the descriptor in ``data``."""
    files, name = load_files(data, wanted)
    pool, added = build_pool(files)
    symbols = Symbols()
    for proto in added:
        symbols.add_file(proto)
    target = next(f for f in files if f.name == name)
    printer = Printer(target, OptionPrinter(pool, symbols), symbols)
    return printer.print_file(header)


def _header(args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    if args.apache_license:
        lines += _LICENSE_APACHE_2.format(holder=args.apache_license).split("\n")
    for note in args.note or []:
        if lines:
            lines.append("")
        for paragraph in note.split("\n"):
            lines += textwrap.wrap(paragraph, width=77) or [""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "input",
        type=Path,
        help="serialized FileDescriptorProto / FileDescriptorSet, or a generated *.py module",
    )
    parser.add_argument("--file", help="file to print when the input is a FileDescriptorSet")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--apache-license",
        metavar="YEARS_AND_HOLDER",
        help='prepend the Apache-2.0 notice, e.g. "2023-2026 Buf Technologies, Inc."',
    )
    parser.add_argument(
        "--note", action="append", help="comment paragraph for the header (repeatable)"
    )
    args = parser.parse_args(argv)

    raw = args.input.read_bytes()
    if args.input.suffix == ".py":
        raw = extract_from_python(raw.decode("utf-8"))
    text = render(raw, args.file, _header(args))
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
