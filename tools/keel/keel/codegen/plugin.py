"""`protoc-gen-keel`: the protoc plugin entry point (stdin → generate → stdout).

`generate` is a pure function of the request, so tests call it without protoc or buf.
"""

from __future__ import annotations

import sys

from google.protobuf.compiler import plugin_pb2

from keel.codegen import asyncapi, events, model, openapi, render


def generate(
    request: plugin_pb2.CodeGeneratorRequest,
) -> plugin_pb2.CodeGeneratorResponse:
    """Keel's outputs for a request: a `*_keel.py` per requested file that declares services
    or events, an OpenAPI document per file with HTTP rules, one AsyncAPI document of events."""
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    try:
        files = events.build(request, model.build(request))
    except model.CodegenError as error:
        response.error = str(error)
        return response
    for path, content in render.render_all(files).items():
        response.file.add(name=path, content=content)
    writer = openapi.Writer(request.proto_file)
    for file in files:
        document = writer.render(file)
        if document is not None:
            name = "openapi/" + file.proto.removesuffix(".proto") + ".json"
            response.file.add(name=name, content=document)
    document = asyncapi.render(files, writer)
    if document is not None:
        response.file.add(name="asyncapi.json", content=document)
    return response


def main() -> None:
    """Run as a protoc plugin."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())
