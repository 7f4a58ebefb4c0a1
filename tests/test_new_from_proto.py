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

from tests.conftest import BIN, REPO

_PAGE = (REPO / "docs/services.md").read_text()
_SECTION = _PAGE.split("### From a proto written first", 1)[1].split("\n### ", 1)[0]
_PROTO = _SECTION.split("```proto\n", 1)[1].split("```", 1)[0]
_HEAD = 'syntax = "proto3";\n\npackage acme.{}.v1;\n\n'
_COMMANDS = _SECTION.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "PYTHONPATH"))}
    return env | extra


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "repo"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO), str(root)], check=True)
    path, body = _PROTO.split("\n", 1)
    proto = root / path.removeprefix("// ").strip()
    proto.parent.mkdir(parents=True)
    proto.write_text(body)
    return root


@pytest.fixture(scope="module")
def made(clone: Path) -> subprocess.CompletedProcess[str]:
    new, gen = (shlex.split(line) for line in _COMMANDS if line.strip())
    assert new[:4] == ["keel", "new", "service", "inventory"]
    assert gen == ["make", "gen"]
    done = _run([str(BIN / "keel"), *new[1:]], clone)
    generated = _run([str(BIN / "keel"), "gen"], clone)  # what make gen runs, without installing
    assert generated.returncode == 0, generated.stderr
    return done


def test_the_package_serves_every_service_of_the_proto(
    clone: Path, made: subprocess.CompletedProcess[str]
) -> None:
    assert made.returncode == 0, made.stderr
    both = "acme.inventory.v1.InventoryService, acme.inventory.v1.InventoryAdminService"
    assert f"keel new service: {both} on port" in made.stdout
    folder = clone / "services/inventory"
    serves = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["keel"]["serves"]
    assert serves == both.split(", ")
    registry = tomllib.loads((clone / "services/registry.toml").read_text())["targets"]
    assert registry[serves[0]] == registry[serves[1]]
    service = (folder / "src/inventory/service.py").read_text()
    assert "class InventoryAdminService(inventory_keel.InventoryAdminServiceBase):" in service
    assert '"""Set a product\'s stock after a count."""' in service  # the proto's comment
    main = (folder / "src/inventory/__main__.py").read_text()
    assert "InventoryService(db, settings), InventoryAdminService(db, settings)" in main


def test_the_package_passes_the_checks_and_its_own_tests(
    clone: Path, made: subprocess.CompletedProcess[str]
) -> None:
    assert made.returncode == 0, made.stderr
    folder = "services/inventory"
    linted = _run([str(BIN / "ruff"), "check", folder], clone)
    assert linted.returncode == 0, linted.stdout
    formatted = _run([str(BIN / "ruff"), "format", "--check", folder], clone)
    assert formatted.returncode == 0, formatted.stdout
    paths = f"{clone}/gen:{clone}/{folder}/src"
    typed = _run(
        [str(BIN / "mypy"), "--strict", f"{folder}/src", f"{folder}/tests"], clone, MYPYPATH=paths
    )
    assert typed.returncode == 0, typed.stdout
    tested = _run(
        [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", f"{folder}/tests"],
        clone,
        PYTHONPATH=paths,
    )
    assert tested.returncode == 0, tested.stdout[-3000:]
    # every method of both services, on both databases (PostgreSQL skips only outside CI)
    assert " passed" in tested.stdout
    assert "failed" not in tested.stdout


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
    done = _run([str(BIN / "keel"), "new", "service", "things", "--proto", proto], root)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / "services/things").exists()
    status = _run(["git", "status", "--porcelain", "services", "pyproject.toml"], root)
    assert status.stdout == ""
