"""OpenAPI 3.1 documents for the methods that carry `google.api.http` (one per proto file).

Schemas follow the proto3 JSON mapping the gateway speaks (camelCase names, int64 as strings,
enums by name, well-known types in their JSON forms); proto comments become descriptions;
`google.api.field_behavior` REQUIRED and `buf.validate` `required` make required properties,
OUTPUT_ONLY makes readOnly; Keel's auth policy becomes the operation's bearer security.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from buf.validate import validate_pb2
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from keel.codegen import model
from keel.httprule import DeepWildcard, Literal, Template, Variable, parse

F = descriptor_pb2.FieldDescriptorProto
_OPENAPI_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# googleapis-common-protos' stubs type the extension loosely: FieldOptions → [FieldBehavior].
_FIELD_BEHAVIOR: Any = field_behavior_pb2.field_behavior
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
    F.TYPE_UINT32: {"type": "integer", "format": "int64"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\\\.[0-9]+)?s$"},
    ".google.protobuf.FieldMask": {"type": "string", "description": "comma-separated paths"},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.DoubleValue": {"type": ["number", "null"]},
    ".google.protobuf.FloatValue": {"type": ["number", "null"]},
    ".google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "int64"},
    ".google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
}
STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: the error of a failed call.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "gRPC status code"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": True,
            },
        },
    },
}


@dataclass(frozen=True)
class _Message:
    descriptor: descriptor_pb2.DescriptorProto
    file: str
    path: tuple[int, ...]


class _Index(model.ReachableFiles):
    """Messages and enums by full name, for the files reachable from the documented ones.

    One index serves a whole plugin request and fills in lazily (each file once, through
    `reach`); a file's comments are read the first time one of its messages becomes a schema.
    """

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        super().__init__(files)
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self._comments: dict[str, Mapping[tuple[int, ...], str]] = {}

    def _index(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        scope = f".{file.package}" if file.package else ""
        self._add(scope, file.message_type, file.enum_type, file.name, (4,))

    def comments(self, file: str) -> Mapping[tuple[int, ...], str]:
        found = self._comments.get(file)
        if found is None:
            found = self._comments[file] = model.file_comments(self.files[file])
        return found

    def _add(
        self,
        scope: str,
        messages: Any,
        enums: Any,
        file: str,
        message_path: tuple[int, ...],
    ) -> None:
        for enum in enums:
            self.enums[f"{scope}.{enum.name}"] = enum
        for i, message in enumerate(messages):
            name = f"{scope}.{message.name}"
            path = (*message_path, i)
            self.messages[name] = _Message(message, file, path)
            self._add(name, message.nested_type, message.enum_type, file, (*path, 3))


def _component(full_name: str) -> str:
    return full_name.lstrip(".")


_Built = dict[str, tuple[dict[str, Any], tuple[str, ...]]]
"""Message type → its schema and the message types it refers to (a `Writer` keeps one)."""


class Schemas:
    """The component schemas of one document: the messages it refers to, transitively.

    A message's schema is built once per `Writer` (files of one request share most of their
    messages) and never changed afterwards, so documents share the dicts.
    """

    def __init__(self, index: _Index, built: _Built) -> None:
        self.index = index
        self.components: dict[str, Any] = {}
        self._built = built
        self._refs: list[str] | None = None  # while building a schema: the types it refers to

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        name = _component(type_name)
        if self._refs is not None:
            self._refs.append(type_name)
        elif name not in self.components:
            pending = [type_name]
            while pending:
                current = pending.pop()
                if _component(current) not in self.components:
                    schema, refs = self._schema(current)
                    self.components[_component(current)] = schema
                    pending.extend(refs)
        return {"$ref": f"#/components/schemas/{name}"}

    def _schema(self, type_name: str) -> tuple[dict[str, Any], tuple[str, ...]]:
        found = self._built.get(type_name)
        if found is None:
            self._refs = []
            try:
                schema = self._message(type_name)
            finally:
                refs, self._refs = tuple(self._refs), None
            found = self._built[type_name] = (schema, refs)
        return found

    def field(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == F.TYPE_MESSAGE:
            entry = self.index.messages.get(field.type_name)
            if entry is not None and entry.descriptor.options.map_entry:
                value = entry.descriptor.field[1]
                return {"type": "object", "additionalProperties": self.field(value)}
            schema = self.ref(field.type_name)
        elif field.type == F.TYPE_ENUM:
            enum = self.index.enums[field.type_name]
            schema = {"type": "string", "enum": [v.name for v in enum.value]}
        else:
            schema = dict(_SCALARS[field.type])
        if field.label == F.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def _message(self, type_name: str) -> dict[str, Any]:
        entry = self.index.messages[type_name]
        comments = self.index.comments(entry.file)
        properties: dict[str, Any] = {}
        required = []
        for i, field in enumerate(entry.descriptor.field):
            schema = self.field(field)
            description = comments.get((*entry.path, 2, i), "")
            if description:
                schema = (
                    {**schema, "description": description}
                    if "$ref" not in schema
                    else {
                        "allOf": [schema],
                        "description": description,
                    }
                )
            behaviors: set[int] = set(field.options.Extensions[_FIELD_BEHAVIOR])
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema = {**schema, "readOnly": True}
            rules = field.options.Extensions[validate_pb2.field]
            if field_behavior_pb2.REQUIRED in behaviors or rules.required:
                required.append(field.json_name)
            properties[field.json_name] = schema
        result: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            result["required"] = required
        description = comments.get(entry.path, "")
        if description:
            result["description"] = description
        return result


def _singular(literal: str) -> str:
    endings = (
        ("ies", "y"),
        ("ves", "f"),
        ("sses", "ss"),
        ("shes", "sh"),
        ("ches", "ch"),
        ("xes", "x"),
        ("s", ""),
    )
    for plural, single in endings:
        if literal.endswith(plural) and len(literal) > len(plural):
            return literal[: -len(plural)] + single
    return f"{literal}_id"


@dataclass(frozen=True)
class _PathParameter:
    name: str
    field: str
    """The field path it binds, "" for none."""
    deep: bool = False
    """It stands for a `**`: zero or more segments."""
    whole: bool = True
    """It is the variable's whole value (else one part of it)."""

    def description(self) -> str:
        bound = f"the request's {self.field}" if self.field else "binds no field"
        if not self.deep:
            return bound if self.field else f"any path segment; {bound}"
        if self.field and not self.whole:
            bound = f"part of {bound}"
        return (
            f"zero or more path segments, slashes kept as they are (`a/b/c`); {bound}. "
            f"With no segments, `/{{{self.name}}}` is left out of the path."
        )


def _openapi_path(template: Template) -> tuple[str, list[_PathParameter]]:
    """The OpenAPI path and its parameters; `{a=x/*/y/*}` becomes `x/{x1}/y/{y1}`.

    A `**` (zero or more segments) is one parameter whose value may hold slashes.
    """
    parts: list[str] = []
    params: list[_PathParameter] = []
    taken: set[str] = set()

    def add(base: str, field: str, *, deep: bool = False, whole: bool = True) -> None:
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}{n}", n + 1
        taken.add(candidate)
        parts.append("{" + candidate + "}")
        params.append(_PathParameter(candidate, field, deep, whole))

    for segment in template.segments:
        if isinstance(segment, Variable):
            field = ".".join(segment.field_path)
            if not segment.multi_segment:
                # `{book.name}` documents as `{name}`: dotted names trip up OpenAPI tools
                add(segment.field_path[-1], field)
                continue
            previous = ""
            for inner in segment.segments:
                if isinstance(inner, Literal):
                    parts.append(inner.value)
                    previous = inner.value
                elif isinstance(inner, DeepWildcard):
                    add(
                        segment.field_path[-1], field, deep=True, whole=segment.segments == (inner,)
                    )
                else:
                    add(_singular(previous or segment.field_path[-1]), field)
        elif isinstance(segment, Literal):
            parts.append(segment.value)
        else:  # a bare * or ** outside a variable binds no field
            add("segment", "", deep=isinstance(segment, DeepWildcard))
    path = "/" + "/".join(parts)
    return (f"{path}:{template.verb}" if template.verb else path), params


def _operations(
    file: model.File, schemas: Schemas, index: _Index
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for service in file.services:
        for method in service.methods:
            for n, rule in enumerate(method.http):
                template = parse(rule.path)
                path, params = _openapi_path(template)
                request = index.messages[f".{method.input.full_name}"].descriptor
                bound = {param.field.split(".")[0] for param in params if param.field}
                parameters: list[dict[str, Any]] = [
                    {
                        "name": param.name,
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": param.description(),
                    }
                    for param in params
                ]
                body: dict[str, Any] | None = None
                if rule.body == "*":
                    body = schemas.ref(f".{method.input.full_name}")
                elif rule.body:
                    body = schemas.field(next(f for f in request.field if f.name == rule.body))
                if rule.body != "*":
                    for field in request.field:
                        if field.name in bound or field.name == rule.body:
                            continue
                        if field.type == F.TYPE_MESSAGE and field.type_name not in _WELL_KNOWN:
                            continue
                        parameters.append(
                            {"name": field.json_name, "in": "query", "schema": schemas.field(field)}
                        )
                response = index.messages[f".{method.output.full_name}"].descriptor
                if rule.response_body:
                    result = schemas.field(
                        next(f for f in response.field if f.name == rule.response_body)
                    )
                else:
                    result = schemas.ref(f".{method.output.full_name}")
                if method.server_streaming:
                    line = {
                        "type": "object",
                        "properties": {
                            "result": result,
                            "error": {"$ref": "#/components/schemas/google.rpc.Status"},
                        },
                    }
                    content = {
                        "application/x-ndjson": {"schema": line},
                        "text/event-stream": {"schema": {"type": "string"}},
                    }
                else:
                    content = {"application/json": {"schema": result}}
                operation: dict[str, Any] = {
                    "operationId": f"{service.name}_{method.name}" + (f"_{n}" if n else ""),
                    "tags": [service.name],
                    "summary": method.comment.split("\n")[0] if method.comment else method.name,
                    "parameters": parameters,
                    "responses": {
                        "200": {"description": "OK", "content": content},
                        "default": {
                            "description": "An error (google.rpc.Status)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/google.rpc.Status"}
                                }
                            },
                        },
                    },
                }
                if method.comment:
                    operation["description"] = method.comment
                if method.deprecated:
                    operation["deprecated"] = True
                if body is not None:
                    operation["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": body}},
                    }
                auth = method.auth or service.auth
                if auth is not None and auth.access == "PUBLIC" and not auth.scopes:
                    operation["security"] = []
                else:
                    operation["security"] = [{"bearer": list(auth.scopes) if auth else []}]
                yield path, rule.method.lower(), operation


class Writer:
    """OpenAPI documents for the files of one plugin request, sharing one lazy index."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self._index = _Index(files)
        self._built: _Built = {}

    def schemas(self, *protos: str) -> Schemas:
        """The component schemas of a new document, over this writer's index and schemas;
        `protos` are the files whose messages the document refers to."""
        for proto in protos:
            self._index.reach(proto)
        return Schemas(self._index, self._built)

    def render(self, file: model.File) -> str | None:
        """The OpenAPI document of `file`'s annotated methods, or None if it has none."""
        if not any(m.http for s in file.services for m in s.methods):
            return None
        schemas = self.schemas(file.proto)
        paths: dict[str, dict[str, Any]] = {}
        for path, verb, operation in _operations(file, schemas, self._index):
            if verb in _OPENAPI_METHODS:
                paths.setdefault(path, {})[verb] = operation
            else:  # OpenAPI 3.1 has no other methods: a custom kind goes in an extension
                custom = paths.setdefault(path, {}).setdefault("x-keel-custom-methods", {})
                custom[verb.upper()] = operation
        package = file.services[0].full_name.rpartition(".")[0]
        document = {
            "openapi": "3.1.0",
            "info": {
                "title": f"{package} ({file.proto})",
                "version": package.rpartition(".")[2] or "v1",
            },
            "paths": paths,
            "components": {
                "schemas": {
                    **dict(sorted(schemas.components.items())),
                    "google.rpc.Status": STATUS_SCHEMA,
                },
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                },
            },
        }
        # orjson's indented form is byte for byte json.dumps(indent=2, ensure_ascii=False)'s,
        # and the documents are large (every schema a file reaches): the stdlib's indenting
        # encoder is pure Python.
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def render(file: model.File, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> str | None:
    """The OpenAPI document of `file`'s annotated methods (one file: `Writer` for several)."""
    return Writer(files).render(file)
