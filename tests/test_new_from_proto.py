"""`keel new service NAME --proto FILE`, as docs/services.md shows it: in a clone of this
repository, the page's proto (two services) is written, the page's commands run (`keel new
service inventory --proto ...`, then generation), and the package they make passes ruff and
mypy --strict, its own tests (a real server on SQLite and PostgreSQL: every service serving,
every method answering UNIMPLEMENTED) and registers both services at one address. A proto that
cannot be served is refused saying why, leaving nothing behind."""

from __future__ import annotations

import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, unused_service_name

_NAME = unused_service_name("inventory")
"""The page's service name, unless the workspace or this virtualenv has one of that name
already (a service the user made with `keel new service inventory`): then inventory2, etc."""
_PASCAL = _NAME.capitalize()
_PAGE = (REPO / "docs/services.md").read_text()
_SECTION = _PAGE.split("### From a proto written first", 1)[1].split("\n### ", 1)[0]
_PROTO = _SECTION.split("```proto\n", 1)[1].split("```", 1)[0]
_HEAD = 'syntax = "proto3";\n\npackage acme.{}.v1;\n\n'
_COMMANDS = _SECTION.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "PYTHONPATH"))}
    return env | extra


def _renamed(text: str) -> str:
    """`text` from the page, about the service called `_NAME`."""
    return text.replace("inventory", _NAME).replace("Inventory", _PASCAL)


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "repo"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(root)], check=True)
    path, body = _renamed(_PROTO).split("\n", 1)
    proto = root / path.removeprefix("// ").strip()
    proto.parent.mkdir(parents=True)
    proto.write_text(body)
    return root


@pytest.fixture(scope="module")
def made(clone: Path) -> subprocess.CompletedProcess[str]:
    new, gen = (shlex.split(line) for line in _COMMANDS if line.strip())
    assert new[:4] == ["keel", "new", "service", "inventory"]
    assert gen == ["make", "gen"]
    done = _run([str(BIN / "keel"), *map(_renamed, new[1:])], clone)
    generated = _run([str(BIN / "keel"), "gen"], clone)  # what make gen runs, without installing
    assert generated.returncode == 0, generated.stderr
    return done


def test_the_package_serves_every_service_of_the_proto(
    clone: Path, made: subprocess.CompletedProcess[str]
) -> None:
    assert made.returncode == 0, made.stderr
    both = _renamed("acme.inventory.v1.InventoryService, acme.inventory.v1.InventoryAdminService")
    assert f"keel new service: {both} on port" in made.stdout
    folder = clone / f"services/{_NAME}"
    serves = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["keel"]["serves"]
    assert serves == both.split(", ")
    registry = tomllib.loads((clone / "services/registry.toml").read_text())["targets"]
    assert registry[serves[0]] == registry[serves[1]]
    service = (folder / f"src/{_NAME}/service.py").read_text()
    assert f"class {_PASCAL}AdminService({_NAME}_keel.{_PASCAL}AdminServiceBase):" in service
    assert '"""Set a product\'s stock after a count."""' in service  # the proto's comment
    main = (folder / f"src/{_NAME}/__main__.py").read_text()
    assert f"{_PASCAL}Service(db, settings), {_PASCAL}AdminService(db, settings)" in main


def test_the_package_passes_the_checks_and_its_own_tests(
    clone: Path, made: subprocess.CompletedProcess[str]
) -> None:
    assert made.returncode == 0, made.stderr
    tested = _checked_and_tested(clone, f"services/{_NAME}")
    # every method of both services, on both databases (PostgreSQL skips only outside CI)
    assert " passed" in tested


def _checked_and_tested(clone: Path, package: str) -> str:
    """Run ruff, ruff format, mypy --strict and the package's own tests on `package` (a
    folder of `clone`) as `make check` and `make test` would; pytest's output."""
    for check in (["ruff", "check", package], ["ruff", "format", "--check", package]):
        done = _run([str(BIN / check[0]), *check[1:]], clone)
        assert done.returncode == 0, done.stdout
    paths = f"{clone}/gen:{clone}/{package}/src"
    typed = _run(
        [str(BIN / "mypy"), "--strict", f"{package}/src", f"{package}/tests"], clone, MYPYPATH=paths
    )
    assert typed.returncode == 0, typed.stdout
    tested = _run(
        [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", f"{package}/tests"],
        clone,
        PYTHONPATH=paths,
    )
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "failed" not in tested.stdout
    return tested.stdout


@pytest.mark.parametrize(
    ("proto", "text", "says"),
    [
        ("proto/acme/nothing/v1/nothing.proto", None, "no such file"),
        (
            "proto/acme/plain/v1/plain.proto",
            _HEAD.format("plain") + "message Thing {\n  string id = 1;\n}\n",
            "declares no service",
        ),
        (
            "proto/acme/broken/v1/broken.proto",
            _HEAD.format("broken") + "message Thing {\n  strin id = 1;\n}\n",
            "does not compile",
        ),
        ("proto/acme/orders/v1/orders.proto", None, "acme.orders.v1.OrderService is in"),
    ],
)
def test_a_proto_that_cannot_be_served_is_refused_saying_why(
    tmp_path: Path, proto: str, text: str | None, says: str
) -> None:
    root = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(root)], check=True)
    if text is not None:
        (root / proto).parent.mkdir(parents=True)
        (root / proto).write_text(text)
    things = unused_service_name("things", root)
    done = _run([str(BIN / "keel"), "new", "service", things, "--proto", proto], root)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / f"services/{things}").exists()
    status = _run(["git", "status", "--porcelain", "services", "pyproject.toml"], root)
    assert status.stdout == ""


_EDGE_MESSAGES = """syntax = "proto3";

package acme.edge.v1;

// A message with one nested in it.
message Outer {
  // The nested one.
  message Inner {
    string id = 1;
  }
  Inner inner = 1;
}
"""

_EDGE_SERVICE = """syntax = "proto3";

package acme.edge.v1;

import "acme/edge/v1/health.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/timestamp.proto";

// Names and kinds that Python and the generated code treat specially.
service EdgeService {
  // A name the generated client reserves (it becomes connect_).
  rpc Connect(Outer.Inner) returns (google.protobuf.Empty);
  // A Python keyword (it becomes import_).
  rpc Import(stream Outer) returns (google.protobuf.Timestamp);
  // Both ways at once.
  rpc Chat(stream Outer) returns (stream Outer.Inner);
  // From the server only.
  rpc Follow(google.protobuf.Empty) returns (stream Outer);
}
"""


def test_names_kinds_and_imports_python_treats_specially_still_make_a_working_package(
    clone: Path, made: subprocess.CompletedProcess[str]
) -> None:
    assert made.returncode == 0, made.stderr
    name = unused_service_name("edge", clone)  # (the package's name: edge unless it is taken)
    folder = clone / f"proto/acme/{name}/v1"
    folder.mkdir(parents=True)
    # (health.proto's module: health_pb2, as grpc's)
    for file, text in (("health.proto", _EDGE_MESSAGES), ("edge-api.proto", _EDGE_SERVICE)):
        moved = text.replace("acme.edge.v1", f"acme.{name}.v1")
        (folder / file).write_text(moved.replace("acme/edge/v1/", f"acme/{name}/v1/"))
    edge = _run(
        [str(BIN / "keel"), "new", "service", name, "--proto", str(folder / "edge-api.proto")],
        clone,
    )
    assert edge.returncode == 0, edge.stderr
    generated = _run([str(BIN / "keel"), "gen"], clone)
    assert generated.returncode == 0, generated.stderr
    service = (clone / f"services/{name}/src/{name}/service.py").read_text()
    assert "async def connect_(" in service  # overrides the base's method
    assert "async def import_(" in service
    assert "request: health_pb2.Outer.Inner" in service.replace(f"acme_{name}_v1_", "")
    _checked_and_tested(clone, f"services/{name}")
