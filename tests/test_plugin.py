"""protoc-gen-keel as a pure function of its request (requests built by real buf)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from keel.codegen import model, names, plugin
from keel.toolchain import image
from keel.toolchain import workspace as ws

from tests.conftest import BIN, write_workspace


def _request(tmp_path: Path, proto: str) -> plugin_pb2.CodeGeneratorRequest:
    root = write_workspace(tmp_path / "ws", {"proto/demo/v1/demo.proto": proto})
    built = image.build(ws.load(root))
    return plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["demo/v1/demo.proto"], proto_file=built.files.file
    )


HEAD = 'syntax = "proto3";\npackage demo.v1;\nimport "google/api/annotations.proto";\n'
MESSAGES = "message A { string name = 1; optional int32 n = 2; }\nmessage B { A a = 1; }\n"


def test_declares_proto3_optional_support(tmp_path: Path) -> None:
    request = _request(tmp_path, HEAD + MESSAGES + "service S { rpc Do(A) returns (B); }\n")
    response = plugin.generate(request)
    assert not response.error
    assert response.supported_features & plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    assert [f.name for f in response.file] == ["demo/v1/demo_keel.py"]


def test_file_without_services_gives_no_output(tmp_path: Path) -> None:
    response = plugin.generate(_request(tmp_path, HEAD + MESSAGES))
    assert not response.error
    assert list(response.file) == []


def test_same_request_same_bytes(tmp_path: Path) -> None:
    request = _request(tmp_path, HEAD + MESSAGES + "service S { rpc Do(A) returns (B); }\n")
    first = plugin.generate(request).SerializeToString()
    assert plugin.generate(request).SerializeToString() == first


@pytest.mark.parametrize(
    ("rpcs", "error"),
    [
        (
            "rpc GetA(A) returns (B); rpc get_a(A) returns (B);",
            "demo/v1/demo.proto: demo.v1.S.get_a: its Python name 'get_a' clashes with rpc GetA",
        ),
        (
            'rpc Do(A) returns (B) { option (google.api.http) = {get: "v1/a"}; }',
            "demo/v1/demo.proto: demo.v1.S.Do: HTTP path 'v1/a' must start with '/'",
        ),
        (
            'rpc Do(A) returns (B) { option (google.api.http) = {post: "/v1/a" body: "x"}; }',
            "HTTP body 'x' is not a field of the request message",
        ),
        (
            'rpc Do(A) returns (B) { option (google.api.http) = {get: "/v1/a" '
            'response_body: "z"}; }',
            "HTTP response_body 'z' is not a field of the response message",
        ),
        (
            'rpc Do(A) returns (B) { option (google.api.http) = {get: "/v1/a" '
            'additional_bindings {get: "/v2/a" additional_bindings {get: "/v3/a"}}}; }',
            "additional_bindings may not nest",
        ),
    ],
    ids=["python-name-clash", "relative-path", "bad-body", "bad-response-body", "nested-bindings"],
)
def test_bad_input_is_an_error_naming_file_and_method(
    tmp_path: Path, rpcs: str, error: str
) -> None:
    response = plugin.generate(_request(tmp_path, HEAD + MESSAGES + f"service S {{ {rpcs} }}\n"))
    assert error in response.error
    assert list(response.file) == []


def test_runs_as_a_protoc_plugin(tmp_path: Path) -> None:
    """The installed `protoc-gen-keel` speaks the plugin protocol on stdin/stdout."""
    request = _request(tmp_path, HEAD + MESSAGES + "service S { rpc Do(A) returns (B); }\n")
    result = subprocess.run(
        [str(BIN / "protoc-gen-keel")],
        input=request.SerializeToString(),
        capture_output=True,
        check=True,
    )
    response = plugin_pb2.CodeGeneratorResponse.FromString(result.stdout)
    assert response.file[0].content == plugin.generate(request).file[0].content


def test_grpc_python_shim_runs_grpcio_generator(tmp_path: Path) -> None:
    request = _request(tmp_path, HEAD + MESSAGES + "service S { rpc Do(A) returns (B); }\n")
    result = subprocess.run(
        [str(BIN / "protoc-gen-grpc_python")],
        input=request.SerializeToString(),
        capture_output=True,
        check=True,
    )
    response = plugin_pb2.CodeGeneratorResponse.FromString(result.stdout)
    assert [f.name for f in response.file] == ["demo/v1/demo_pb2_grpc.py"]
    assert "class SStub" in response.file[0].content


@pytest.mark.parametrize(
    ("rpc", "python"),
    [
        ("CreateOrder", "create_order"),
        ("GetHTTPStatus", "get_http_status"),
        ("ListV2Items", "list_v2_items"),
        ("Import", "import_"),
        ("Connect", "connect_"),
        ("Close", "close_"),
        ("Lambda", "lambda_"),
        ("Do", "do"),
    ],
)
def test_method_names(rpc: str, python: str) -> None:
    assert names.method_name(rpc) == python


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ('get: "/v1/{name=a/{b}}"', "variables cannot nest"),
        ('get: "/v1/{missing}"', "missing is not a field of the request message"),
        ('get: "/v1/{name.x}"', "name.x: name is not a message"),
        ('get: "/v1/{a}"', "a is a message; path variables need a scalar field"),
    ],
)
def test_bad_path_variables_fail_generation(tmp_path: Path, rule: str, error: str) -> None:
    messages = "message A { string name = 1; }\nmessage B { A a = 1; string name = 2; }\n"
    rpc = f"rpc Do(B) returns (A) {{ option (google.api.http) = {{{rule}}}; }}"
    response = plugin.generate(_request(tmp_path, HEAD + messages + f"service S {{ {rpc} }}\n"))
    assert error in response.error
    assert "demo/v1/demo.proto: demo.v1.S.Do" in response.error


def test_indexes_cover_only_files_reachable_from_those_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's other files are never indexed, and a shared file's comments are read once."""
    shared = 'syntax = "proto3";\npackage demo.shared.v1;\n'
    shared += "// A thing.\nmessage Thing { string id = 1; }\n"
    annotated = (
        HEAD.replace("package demo.v1;", "package demo.{n}.v1;")
        + 'import "demo/shared/v1/shared.proto";\n'
        + "message A { string name = 1; demo.shared.v1.Thing thing = 2; }\n"
        + 'service S { rpc Do(A) returns (A) { option (google.api.http) = {get: "/v1/{name}"}; }}'
    )
    files = {
        "proto/demo/shared/v1/shared.proto": shared,
        "proto/demo/a/v1/a.proto": annotated.replace("{n}", "a"),
        "proto/demo/b/v1/b.proto": annotated.replace("{n}", "b"),
    }
    for i in range(20):  # unrelated: in the request, never needed
        files[f"proto/other/o{i}/v1/o.proto"] = (
            f'syntax = "proto3";\npackage other.o{i}.v1;\n'
            "// Unrelated.\nmessage O { int32 n = 1; }\n"
        )
    built = image.build(ws.load(write_workspace(tmp_path / "ws", files)))
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["demo/a/v1/a.proto", "demo/b/v1/b.proto"], proto_file=built.files.file
    )
    commented: list[str] = []
    indexed: list[str] = []
    file_comments, proto_module = model.file_comments, names.proto_module

    def counted_comments(file: descriptor_pb2.FileDescriptorProto) -> Mapping[tuple[int, ...], str]:
        commented.append(file.name)
        return file_comments(file)

    def counted_module(name: str, suffix: str = "_pb2") -> str:
        indexed.append(name)
        return proto_module(name, suffix)

    monkeypatch.setattr(model, "file_comments", counted_comments)
    monkeypatch.setattr(names, "proto_module", counted_module)
    response = plugin.generate(request)
    assert not response.error
    assert {f.name for f in response.file} == {
        "demo/a/v1/a_keel.py",
        "demo/b/v1/b_keel.py",
        "openapi/demo/a/v1/a.json",
        "openapi/demo/b/v1/b.json",
    }
    assert '"description": "A thing."' in response.file[-1].content  # shared comments are read
    assert sorted(commented) == [
        "demo/a/v1/a.proto",
        "demo/b/v1/b.proto",
        "demo/shared/v1/shared.proto",
    ]
    assert not any(name.startswith("other/") for name in indexed)
