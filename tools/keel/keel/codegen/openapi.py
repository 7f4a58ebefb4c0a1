"""OpenAPI 3.1 documents for the methods that carry `google.api.http` (one per proto file).

Schemas follow the proto3 JSON mapping the gateway speaks (camelCase names, int64 as strings,
enums by name, well-known types in their JSON forms); proto comments become descriptions;
`google.api.field_behavior` REQUIRED and `buf.validate` `required` make required properties,
OUTPUT_ONLY makes readOnly; Keel's auth policy becomes the operation's bearer security.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
    comments: dict[tuple[int, ...], str]
    path: tuple[int, ...]


class _Index:
    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for file in files:
            comments = dict(model.file_comments(file))
            scope = f".{file.package}" if file.package else ""
            self._add(scope, file.message_type, file.enum_type, comments, (4,))

    def _add(
        self,
        scope: str,
        messages: Any,
        enums: Any,
        comments: dict[tuple[int, ...], str],
        message_path: tuple[int, ...],
    ) -> None:
        for enum in enums:
            self.enums[f"{scope}.{enum.name}"] = enum
        for i, message in enumerate(messages):
            name = f"{scope}.{message.name}"
            path = (*message_path, i)
            self.messages[name] = _Message(message, comments, path)
            self._add(name, message.nested_type, message.enum_type, comments, (*path, 3))


def _component(full_name: str) -> str:
    return full_name.lstrip(".")


class _Schemas:
    def __init__(self, index: _Index) -> None:
        self.index = index
        self.components: dict[str, Any] = {}

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        name = _component(type_name)
        if name not in self.components:
            self.components[name] = {}  # placeholder first: recursive messages
            self.components[name] = self._message(type_name)
        return {"$ref": f"#/components/schemas/{name}"}

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
        properties: dict[str, Any] = {}
        required = []
        for i, field in enumerate(entry.descriptor.field):
            schema = self.field(field)
            description = entry.comments.get((*entry.path, 2, i), "")
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
        description = entry.comments.get(entry.path, "")
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


def _openapi_path(template: Template) -> tuple[str, list[tuple[str, str]]]:
    """The OpenAPI path and (parameter, field path) pairs; `{a=x/*/y/*}` becomes `x/{x1}/y/{y1}`."""
    parts: list[str] = []
    params: list[tuple[str, str]] = []
    taken: set[str] = set()

    def name_for(base: str) -> str:
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}{n}", n + 1
        taken.add(candidate)
        return candidate

    for segment in template.segments:
        if isinstance(segment, Variable):
            field = ".".join(segment.field_path)
            if not segment.multi_segment:
                # `{book.name}` documents as `{name}`: dotted names trip up OpenAPI tools
                parts.append("{" + name_for(segment.field_path[-1]) + "}")
                params.append((parts[-1][1:-1], field))
                continue
            previous = ""
            for inner in segment.segments:
                if isinstance(inner, Literal):
                    parts.append(inner.value)
                    previous = inner.value
                else:
                    base = (
                        field if isinstance(inner, DeepWildcard) else _singular(previous or field)
                    )
                    parts.append("{" + name_for(base) + "}")
                    params.append((parts[-1][1:-1], field))
        elif isinstance(segment, Literal):
            parts.append(segment.value)
        else:  # a bare * or ** outside a variable binds no field
            parts.append("{" + name_for("segment") + "}")
            params.append((parts[-1][1:-1], ""))
    path = "/" + "/".join(parts)
    return (f"{path}:{template.verb}" if template.verb else path), params


def _operations(
    file: model.File, schemas: _Schemas, index: _Index
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for service in file.services:
        for method in service.methods:
            for n, rule in enumerate(method.http):
                template = parse(rule.path)
                path, params = _openapi_path(template)
                request = index.messages[f".{method.input.full_name}"].descriptor
                bound = {field.split(".")[0] for _, field in params if field}
                parameters: list[dict[str, Any]] = [
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": (
                            f"the request's {field}"
                            if field
                            else "any path segment; binds no field"
                        ),
                    }
                    for name, field in params
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


def render(file: model.File, files: list[descriptor_pb2.FileDescriptorProto]) -> str | None:
    """The OpenAPI document of `file`'s annotated methods, or None if it has none."""
    if not any(m.http for s in file.services for m in s.methods):
        return None
    index = _Index(files)
    schemas = _Schemas(index)
    paths: dict[str, dict[str, Any]] = {}
    for path, verb, operation in _operations(file, schemas, index):
        if verb in _OPENAPI_METHODS:
            paths.setdefault(path, {})[verb] = operation
        else:  # OpenAPI 3.1 has no other methods: a custom kind goes in an extension
            paths.setdefault(path, {}).setdefault("x-keel-custom-methods", {})[verb.upper()] = (
                operation
            )
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
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
