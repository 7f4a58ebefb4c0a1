"""A team's own templates for `keel new service`, as a user runs it: `keel new templates DIR`
copies Keel's templates to edit; `--templates DIR` (or `[tool.keel.new] templates` in the
workspace's pyproject.toml) replaces them file by file and adds files; a wrong folder is refused
saying why. Runs in a small workspace of its own (a registry, a pyproject.toml, an org folder)."""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from keel.scaffold.service import TEMPLATES

from tests.conftest import BIN, REPO, unused_service_name

_NAME = unused_service_name("inventory")
"""The page's service name, unless this virtualenv imports one of that name already (a service
the user made with `keel new service inventory`): then inventory2, and so on."""
_PASCAL = _NAME.capitalize()
_PAGE = (REPO / "docs/services.md").read_text()
_SECTION = _PAGE.split("### Your team's templates", 1)[1].split("\n## ", 1)[0]


def _block(language: str) -> str:
    """The section's first fenced block in `language`, as the page shows it."""
    return _SECTION.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def _documented_commands() -> list[list[str]]:
    """The section's shell commands, without their comments."""
    lines = [line.split("#", 1)[0].strip() for line in _block("sh").splitlines()]
    return [shlex.split(line) for line in lines if line]


def _keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "keel"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _workspace(root: Path, pyproject: str = '[project]\nname = "shop"\n') -> Path:
    (root / "proto/acme").mkdir(parents=True)
    (root / "services").mkdir()
    (root / "services/registry.toml").write_text(
        '[targets]\n"acme.catalog.v1.CatalogService" = "127.0.0.1:50061"\n'
    )
    (root / "pyproject.toml").write_text(pyproject)
    return root


def test_edited_and_added_templates_replace_keels_file_by_file(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    copy, use = _documented_commands()
    assert copy[:3] == ["keel", "new", "templates"]
    assert use[:4] == ["keel", "new", "service", "inventory"]
    use[3] = _NAME
    copied = _keel(*copy[1:], cwd=root)
    assert copied.returncode == 0, copied.stderr
    ours = root / copy[3]
    keels = sorted(p.relative_to(TEMPLATES) for p in TEMPLATES.rglob("*.tmpl"))
    assert sorted(p.relative_to(ours) for p in ours.rglob("*.tmpl")) == keels
    readme = ours / "service/README.md.tmpl"
    readme.write_text("# {{Name}}: on call, team {{org}}\n" + readme.read_text())
    (ours / "service/CODEOWNERS.tmpl").write_text("* @{{org}}/{{name}} # {{service}} :{{port}}\n")

    made = _keel(*use[1:], cwd=root)

    assert made.returncode == 0, made.stderr
    folder = root / f"services/{_NAME}"
    assert (folder / "README.md").read_text().startswith(f"# {_PASCAL}: on call, team acme\n")
    owners = (folder / "CODEOWNERS").read_text()
    assert owners == f"* @acme/{_NAME} # acme.{_NAME}.v1.{_PASCAL}Service :50062\n"
    assert f"wrote   services/{_NAME}/CODEOWNERS" in made.stdout
    # what the team did not change comes from Keel's templates, filled in
    assert (
        f"class {_PASCAL}Service({_NAME}_keel.{_PASCAL}ServiceBase)"
        in (folder / f"src/{_NAME}/service.py").read_text()
    )
    assert (root / f"proto/acme/{_NAME}/v1/{_NAME}.proto").is_file()
    assert (
        f'"acme.{_NAME}.v1.{_PASCAL}Service" = "127.0.0.1:50062"'
        in (root / "services/registry.toml").read_text()
    )


def test_the_workspace_names_its_templates_in_pyproject(tmp_path: Path) -> None:
    named = _block("toml")
    folder = tomllib.loads(named)["tool"]["keel"]["new"]["templates"]
    root = _workspace(tmp_path, '[project]\nname = "shop"\n\n' + named)
    proto = root / folder / "proto/service.proto.tmpl"
    proto.parent.mkdir(parents=True)
    keels = (TEMPLATES / "proto/service.proto.tmpl").read_text()
    proto.write_text("// Owned by the {{name}} team.\n" + keels)

    name = unused_service_name("stock")
    made = _keel("new", "service", name, cwd=root)

    assert made.returncode == 0, made.stderr
    written = (root / f"proto/acme/{name}/v1/{name}.proto").read_text()
    assert written.startswith(f"// Owned by the {name} team.\n")
    assert f"service {name.capitalize()}Service" in written


def test_only_the_named_templates_are_copied(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    (root / "templates/keel/service").mkdir(parents=True)
    (root / "templates/keel/service/CODEOWNERS.tmpl").write_text("* @{{org}}/{{name}}\n")

    copied = _keel("new", "templates", "templates/keel", "service/README.md.tmpl", cwd=root)
    again = _keel("new", "templates", "templates/keel", "service/README.md.tmpl", cwd=root)
    unknown = _keel("new", "templates", "templates/keel", "service/nothing.tmpl", cwd=root)

    assert copied.returncode == 0, copied.stderr
    files = sorted(p.relative_to(root / "templates/keel").as_posix() for p in root.rglob("*.tmpl"))
    assert files == ["service/CODEOWNERS.tmpl", "service/README.md.tmpl"]
    assert (root / "templates/keel/service/README.md.tmpl").read_bytes() == (
        TEMPLATES / "service/README.md.tmpl"
    ).read_bytes()
    assert again.returncode == 2
    assert "exists already: edit it there" in again.stderr
    assert unknown.returncode == 2
    assert "service/nothing.tmpl is not one of Keel's templates" in unknown.stderr


def test_a_templates_folder_that_cannot_be_used_is_refused_saying_why(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    (root / "empty").mkdir()
    (root / "full").mkdir()
    (root / "full/notes.txt").write_text("mine")
    registry = (root / "services/registry.toml").read_text()

    missing = _keel("new", "service", _NAME, "--templates", "nowhere", cwd=root)
    unlaid = _keel("new", "service", _NAME, "--templates", "empty", cwd=root)
    taken = _keel("new", "templates", "full", cwd=root)

    assert missing.returncode == 2
    assert "--templates nowhere: no such folder" in missing.stderr
    assert unlaid.returncode == 2
    assert "expected proto/ or service/ in it" in unlaid.stderr
    assert taken.returncode == 2
    assert "full is not empty" in taken.stderr
    assert (root / "full/notes.txt").read_text() == "mine"
    assert not (root / f"services/{_NAME}").exists()
    assert (root / "services/registry.toml").read_text() == registry


@pytest.mark.parametrize(
    ("pyproject", "says"),
    [
        ('[tool.keel.new]\ntemplates = ["a"]\n', "expected a folder path"),
        ("[tool.keel.new\n", "pyproject.toml is not valid TOML"),
    ],
)
def test_a_wrong_templates_setting_is_refused_saying_why(
    tmp_path: Path, pyproject: str, says: str
) -> None:
    root = _workspace(tmp_path, pyproject)
    (root / "a-file").write_text("")

    made = _keel("new", "service", _NAME, cwd=root)
    into_file = _keel("new", "templates", "a-file", cwd=root)

    assert made.returncode == 2
    assert says in made.stderr
    assert "Traceback" not in made.stderr + into_file.stderr
    assert into_file.returncode == 2
    assert "a-file is a file" in into_file.stderr


def test_outside_a_workspace_it_says_what_is_missing(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    (root / "pyproject.toml").unlink()

    made = _keel("new", "service", _NAME, cwd=root)

    assert made.returncode == 2
    assert "pyproject.toml is missing" in made.stderr
    assert "Traceback" not in made.stderr
    assert not (root / f"services/{_NAME}").exists()


def test_a_service_with_the_longest_name_keel_takes_passes_the_line_limit(tmp_path: Path) -> None:
    """Keel's templates put the name into docstrings: a long name makes them wrap, not break
    ruff's E501 (line-length 100, as this repository's pyproject.toml sets it)."""
    root = _workspace(tmp_path)
    name = unused_service_name("warehousereplenishmentplanning", root)
    assert len(name) >= 30
    made = _keel("new", "service", name, cwd=root)
    assert made.returncode == 0, made.stdout + made.stderr
    folder = root / "services" / name
    limit = ("--config", str(REPO / "pyproject.toml"), "--select", "E501")
    checked = subprocess.run(
        [str(BIN / "ruff"), "check", *limit, str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(list(folder.rglob("*.py"))) > 5  # (the service's code was checked)
