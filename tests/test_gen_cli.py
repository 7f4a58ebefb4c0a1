"""`keel gen` end to end: real buf, real protoc, real files on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import GOLDEN, keel, snapshot, write_workspace

ONE_SERVICE = """syntax = "proto3";
package demo.v1;
message PingRequest { string text = 1; }
message PingResponse { string text = 1; }
service PingService { rpc Ping(PingRequest) returns (PingResponse); }
"""


def test_golden_outputs_are_current(copy_golden_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = keel("gen", "--workspace", copy_golden_workspace, "--out", out)
    assert result.returncode == 0, result.stderr
    assert snapshot(out) == snapshot(GOLDEN / "out"), "golden files are stale: run `make golden`"


def test_same_input_gives_byte_identical_output(
    copy_golden_workspace: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert keel("gen", "--workspace", copy_golden_workspace, "--out", first).returncode == 0
    assert (
        keel("gen", "--workspace", copy_golden_workspace, "--out", second, "--force").returncode
        == 0
    )
    assert snapshot(first) == snapshot(second)
    expected = {
        "kitchen/v1/kitchen_pb2.py",
        "kitchen/v1/kitchen_pb2.pyi",
        "kitchen/v1/kitchen_pb2_grpc.py",
        "kitchen/v1/kitchen_pb2_grpc.pyi",
        "kitchen/v1/kitchen_keel.py",
        "kitchen/shared/v1/shared_pb2.py",
    }
    assert expected <= set(snapshot(first))
    # Keel's supplied protos are imports, never outputs: their modules come from installed packages.
    assert not any(name.startswith(("google/", "buf/", "keel/")) for name in snapshot(first))


def test_second_run_changes_nothing(copy_golden_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert keel("gen", "--workspace", copy_golden_workspace, "--out", out).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = keel("gen", "--workspace", copy_golden_workspace, "--out", out)
    assert again.returncode == 0
    assert "up to date" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_hand_edit_of_output_is_repaired(copy_golden_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert keel("gen", "--workspace", copy_golden_workspace, "--out", out).returncode == 0
    target = out / "kitchen/v1/kitchen_keel.py"
    original = target.read_bytes()
    target.write_text("# edited by hand\n")
    result = keel("gen", "--workspace", copy_golden_workspace, "--out", out)
    assert result.returncode == 0
    assert "1 written" in result.stdout
    assert target.read_bytes() == original


def test_edit_rewrites_only_affected_files(copy_golden_workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert keel("gen", "--workspace", copy_golden_workspace, "--out", out).returncode == 0
    before = snapshot(out)
    shared = copy_golden_workspace / "kitchen/shared/v1/shared.proto"
    shared.write_text(shared.read_text() + "\nmessage Extra {\n  string note = 1;\n}\n")
    assert keel("gen", "--workspace", copy_golden_workspace, "--out", out).returncode == 0
    after = snapshot(out)
    changed = {name for name in after if after[name] != before.get(name)}
    assert "kitchen/shared/v1/shared_pb2.py" in changed
    assert "kitchen/shared/v1/shared_pb2.pyi" in changed
    assert not any(name.startswith("kitchen/v1/") for name in changed)
    assert b"class Extra" in after["kitchen/shared/v1/shared_pb2.pyi"]


def test_removed_proto_leaves_no_stale_files(tmp_path: Path) -> None:
    ws = write_workspace(
        tmp_path / "ws",
        {
            "proto/demo/v1/ping.proto": ONE_SERVICE,
            "proto/demo/v1/gone.proto": ONE_SERVICE.replace("Ping", "Gone"),
        },
    )
    out = tmp_path / "out"
    keep = out / "README.txt"
    out.mkdir()
    keep.write_text("not Keel's: must survive")
    assert keel("gen", "--workspace", ws, "--out", out).returncode == 0
    assert (out / "demo/v1/gone_keel.py").is_file()
    (ws / "proto/demo/v1/gone.proto").unlink()
    result = keel("gen", "--workspace", ws, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "4 removed" in result.stdout or "5 removed" in result.stdout
    names = set(snapshot(out))
    assert not any("gone" in name for name in names)
    assert "demo/v1/ping_keel.py" in names
    assert keep.read_text() == "not Keel's: must survive"


def test_proto_error_names_file_and_line_and_writes_nothing(tmp_path: Path) -> None:
    ws = write_workspace(tmp_path / "ws", {"proto/demo/v1/ping.proto": ONE_SERVICE})
    out = tmp_path / "out"
    assert keel("gen", "--workspace", ws, "--out", out).returncode == 0
    before = snapshot(out)
    broken = ONE_SERVICE.replace(
        "string text = 1; }\nmessage PingResponse", "strin text = 1; }\nmessage PingResponse"
    )
    (ws / "proto/demo/v1/ping.proto").write_text(broken)
    result = keel("gen", "--workspace", ws, "--out", out)
    assert result.returncode == 1
    assert "proto/demo/v1/ping.proto:3:" in result.stderr
    assert "strin" in result.stderr
    assert "keel_supplied" not in result.stderr
    assert "/tmp/keel-gen" not in result.stderr
    assert snapshot(out) == before


def test_generator_error_names_file_and_method(tmp_path: Path) -> None:
    bad_body = ONE_SERVICE.replace(
        "rpc Ping(PingRequest) returns (PingResponse);",
        "rpc Ping(PingRequest) returns (PingResponse) {\n"
        '  option (google.api.http) = {post: "/v1/ping" body: "nope"};\n}',
    ).replace("package demo.v1;", 'package demo.v1;\nimport "google/api/annotations.proto";')
    ws = write_workspace(tmp_path / "ws", {"proto/demo/v1/ping.proto": bad_body})
    out = tmp_path / "out"
    result = keel("gen", "--workspace", ws, "--out", out)
    assert result.returncode == 1
    assert "demo/v1/ping.proto: demo.v1.PingService.Ping:" in result.stderr
    assert "'nope' is not a field of the request message" in result.stderr
    assert not out.exists()


def test_v1_workspace_is_refused_clearly(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "buf.yaml").write_text("version: v1\n")
    result = keel("gen", "--workspace", ws, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "buf v2 workspace" in result.stderr
    assert "buf config migrate" in result.stderr


def test_missing_buf_yaml_is_refused_clearly(tmp_path: Path) -> None:
    result = keel("gen", "--workspace", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "no buf.yaml" in result.stderr


def test_workspace_with_own_copy_of_a_supplied_proto(tmp_path: Path) -> None:
    """A workspace that vendors google/api itself keeps its copy; Keel adds none of its own."""
    vendored = shutil.copytree(
        Path(__file__).resolve().parent.parent / "tools/keel/keel/protos/google",
        tmp_path / "ws/third_party/google",
    )
    assert vendored.is_dir()
    ping = ONE_SERVICE.replace(
        "package demo.v1;", 'package demo.v1;\nimport "google/api/annotations.proto";'
    )
    ws = write_workspace(
        tmp_path / "ws", {"proto/demo/v1/ping.proto": ping}, modules=("proto", "third_party")
    )
    out = tmp_path / "out"
    result = keel("gen", "--workspace", ws, "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "demo/v1/ping_keel.py").is_file()
    assert not (out / "google").exists()


def test_path_filter_generates_only_those_files(
    copy_golden_workspace: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = keel(
        "gen", "--workspace", copy_golden_workspace, "--out", out, "--path", "kitchen/shared"
    )
    assert result.returncode == 0, result.stderr
    assert set(snapshot(out)) == {
        ".keel-gen.json",
        "kitchen/shared/v1/shared_pb2.py",
        "kitchen/shared/v1/shared_pb2.pyi",
        "kitchen/shared/v1/shared_pb2_grpc.py",
        "kitchen/shared/v1/shared_pb2_grpc.pyi",
    }


def test_path_filter_compiles_only_the_selected_files_and_their_imports(tmp_path: Path) -> None:
    """With --path, buf compiles what `buf generate --path` would: a broken file elsewhere in
    the workspace is never read. Paths name files or folders, in any module."""
    ping = ONE_SERVICE.replace(
        "package demo.v1;", 'package demo.v1;\nimport "shared/v1/shared.proto";'
    ).replace(
        "string text = 1; }\nmessage PingResponse",
        "shared.v1.Note note = 1; }\nmessage PingResponse",
    )
    ws = write_workspace(
        tmp_path / "ws",
        {
            "proto/demo/v1/ping.proto": ping,
            "vendor/shared/v1/shared.proto": (
                'syntax = "proto3";\npackage shared.v1;\nmessage Note { string text = 1; }\n'
            ),
            "proto/other/v1/broken.proto": 'syntax = "proto3";\nmessage {\n',
        },
        modules=("proto", "vendor"),
    )
    out = tmp_path / "out"
    result = keel("gen", "--workspace", ws, "--out", out, "--path", "demo/v1")
    assert result.returncode == 0, result.stderr
    assert {name for name in snapshot(out) if not name.startswith(".")} == {
        "demo/v1/ping_pb2.py",
        "demo/v1/ping_pb2.pyi",
        "demo/v1/ping_pb2_grpc.py",
        "demo/v1/ping_pb2_grpc.pyi",
        "demo/v1/ping_keel.py",
    }
    shared = tmp_path / "shared"
    path = "shared/v1/shared.proto"  # a file, in the second module
    result = keel("gen", "--workspace", ws, "--out", shared, "--path", path)
    assert result.returncode == 0, result.stderr
    assert "shared/v1/shared_pb2.py" in snapshot(shared)
    everything = keel("gen", "--workspace", ws, "--out", tmp_path / "all")
    assert everything.returncode == 1  # without --path, every file is compiled
    assert "proto/other/v1/broken.proto" in everything.stderr
