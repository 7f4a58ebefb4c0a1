"""`keel new service NAME`: a new service laid out as the example services are.

Writes `proto/<org>/<name>/v1/<name>.proto` (one public read with a REST route, one keyed write,
one event) and `services/<name>/` (domain, store, in-memory store, thin gRPC class, settings,
tables with a first migration, tests, Dockerfile, README), and registers the service: its
address in `services/registry.toml` (so discovery, `keel dev`/`make run` and the gateway find
it) and its package in the import-linter contract that keeps services independent. The templates
are in keel/scaffold/templates; a team's own templates (`--templates DIR`, or `[tool.keel.new]
templates` in the repository's pyproject.toml) replace them file by file and may add files.
`{{name}}`, `{{Name}}`, `{{NAME}}`, `{{org}}`, `{{service}}` and `{{port}}` are filled in.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keel.scaffold import docstrings

TEMPLATES = Path(__file__).parent / "templates"
_NAME = re.compile(r"^[a-z][a-z0-9]{1,30}$")
_TARGET = re.compile(r'^"(?P<service>[^"]+)"\s*=\s*"(?P<host>[^":]+):(?P<port>\d+)"\s*$')
_INDEPENDENT = re.compile(
    r'name = "Services are independent of each other"\ntype = "independence"\n'
    r"modules = \[(?P<modules>[^\]]*)\]"
)
_ROOTS = re.compile(r"\[tool\.importlinter\]\nroot_packages = \[(?P<modules>[^\]]*)\]")
_MYPY_PATH = re.compile(r'\[tool\.mypy\][^\[]*?mypy_path = "(?P<paths>[^"]*)"')


class ScaffoldError(Exception):
    """The service cannot be made as asked; the message says why."""


@dataclass
class Created:
    """What `new_service` wrote and changed, relative to the repository's root."""

    service: str
    port: int
    services: list[str] = field(default_factory=list)  # all it serves (`service` first)
    written: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def check_name(
    name: str, root: Path, services_dir: str = "services", *, proto_exists: bool = False
) -> None:
    """ScaffoldError unless `name` can be a new service's name in the repository at `root`
    (`proto_exists`: its proto package is there already, written first)."""
    if not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"{name!r} is not a valid service name: use 2 to 31 lower-case letters and digits, "
            "starting with a letter (it is the proto package, the Python package and the "
            "folder name, e.g. inventory)"
        )
    if keyword.iskeyword(name) or name in sys.stdlib_module_names:
        raise ScaffoldError(
            f"{name!r} is a Python keyword or standard-library module: the service's package "
            "would hide it; choose another name"
        )
    if (root / services_dir / name).exists():
        raise ScaffoldError(f"{services_dir}/{name} exists already: choose another name")
    for proto in () if proto_exists else (root / "proto").glob(f"*/{name}"):
        raise ScaffoldError(f"{proto.relative_to(root)} exists already: choose another name")
    if name in {p.name for p in (root / "proto").glob("*") if p.is_dir()} | {
        p.name for p in (root / "gen").glob("*") if p.is_dir()
    }:
        raise ScaffoldError(
            f"{name!r} is a top-level package of the generated code (gen/{name}): the service's "
            "package would hide it; choose another name"
        )
    if importlib.util.find_spec(name) is not None:
        raise ScaffoldError(
            f"{name!r} is an importable package already (an installed library or a service): "
            "the service's package would clash with it; choose another name"
        )


def _org(root: Path, org: str | None) -> str:
    if org is not None:
        if not _NAME.fullmatch(org):
            raise ScaffoldError(f"--org {org!r}: use lower-case letters and digits (e.g. acme)")
        return org
    found = sorted(p.name for p in (root / "proto").glob("*") if p.is_dir())
    if len(found) != 1:
        raise ScaffoldError(
            f"cannot tell the organisation from proto/ (found {', '.join(found) or 'nothing'}): "
            "pass --org"
        )
    return found[0]


def _port(registry: Path, port: int | None) -> int:
    """`port`, or the one after the registry's highest; ScaffoldError if the registry has it."""
    used = {
        int(m["port"])
        for line in registry.read_text().splitlines()
        if (m := _TARGET.match(line.strip()))
    }
    chosen = port if port is not None else max(used, default=50060) + 1
    if chosen in used:
        raise ScaffoldError(f"port {chosen} is taken in {registry.name}: pass another --port")
    if not 0 < chosen < 64536:  # its metrics listen 1000 above it
        raise ScaffoldError(f"port {chosen}: choose one from 1 to 64535")
    return chosen


def _register(registry: Path, service: str, chosen: int) -> None:
    """Add `service` to the registry's [targets] on port `chosen`."""
    lines = registry.read_text().splitlines()
    entries = [i for i, line in enumerate(lines) if _TARGET.match(line.strip())]
    line = f'"{service}" = "127.0.0.1:{chosen}"'
    if entries:
        lines.insert(entries[-1] + 1, line)
    else:
        at = next((i for i, text in enumerate(lines) if text.strip() == "[targets]"), None)
        if at is None:
            lines += ["", "[targets]"]
            at = len(lines) - 1
        lines.insert(at + 1, line)
    registry.write_text("\n".join(lines) + "\n")


def _listed(text: str, pattern: re.Pattern[str], name: str) -> str:
    """`text` with `name` added to the quoted list that `pattern`'s `modules` group matches."""
    match = pattern.search(text)
    if match is None:
        return text
    modules = [m.strip().strip('"') for m in match["modules"].split(",") if m.strip()]
    listed = ", ".join(f'"{m}"' for m in sorted({*modules, name}))
    return text[: match.start("modules")] + listed + text[match.end("modules") :]


def _register_package(pyproject: Path, name: str, services_dir: str) -> bool:
    """Add the new package where the workspace's checks list the services' packages: the
    import-linter roots and the contract keeping services independent, and mypy's path."""
    before = pyproject.read_text()
    text = _listed(before, _INDEPENDENT, name)
    text = _listed(text, _ROOTS, name)
    match = _MYPY_PATH.search(text)
    source = f"{services_dir}/{name}/src"
    if match is not None and source not in match["paths"].split(":"):
        text = text[: match.end("paths")] + f":{source}" + text[match.end("paths") :]
    pyproject.write_text(text)
    return text != before


def _python(destination: Path, text: str) -> str:
    """A rendered file's text; a Python file's docstrings wrapped to the line limit (a long
    service name must not make lines `make check` refuses)."""
    return docstrings.wrap(text) if destination.suffix == ".py" else text


def _tidy(paths: list[Path]) -> None:
    """Sort imports and format as the repository does, when it uses ruff (the org's package
    sorts among the third-party imports wherever its name falls)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        return
    files = [str(p) for p in paths]
    subprocess.run([ruff, "check", "--fix", "--quiet", "--select", "I", *files], check=False)
    subprocess.run([ruff, "format", "--quiet", *files], check=False)


def template_folders(root: Path, templates: Path | None) -> list[Path]:
    """Where templates are looked up, first match wins: `templates`, else the folder the
    repository's pyproject.toml names in `[tool.keel.new] templates`, then Keel's own."""
    if templates is None:
        pyproject = root / "pyproject.toml"
        try:
            data = tomllib.loads(pyproject.read_text()) if pyproject.is_file() else {}
        except tomllib.TOMLDecodeError as error:
            raise ScaffoldError(f"pyproject.toml is not valid TOML: {error}") from None
        named = data.get("tool", {}).get("keel", {}).get("new", {}).get("templates")
        if named is None:
            return [TEMPLATES]
        if not isinstance(named, str):
            raise ScaffoldError(
                f"[tool.keel.new] templates = {named!r} in pyproject.toml: expected a folder "
                'path, e.g. templates = "templates/keel"'
            )
        templates = root / named
        where = f"[tool.keel.new] templates = {named!r} in pyproject.toml"
    else:
        where = f"--templates {templates}"
    if not templates.is_dir():
        raise ScaffoldError(f"{where}: no such folder (`keel new templates DIR` makes one)")
    if not (templates / "service").is_dir() and not (templates / "proto").is_dir():
        raise ScaffoldError(
            f"{where}: expected proto/ or service/ in it, laid out as Keel's templates "
            "(`keel new templates DIR` copies them)"
        )
    return [templates.resolve(), TEMPLATES]


def _templates(folders: list[Path]) -> dict[str, Path]:
    """Each template's path relative to its folder, from the first folder that has it."""
    found: dict[str, Path] = {}
    for folder in reversed(folders):
        for template in folder.rglob("*.tmpl"):
            found[template.relative_to(folder).as_posix()] = template
    return found


def copy_templates(destination: Path, files: Sequence[str] = ()) -> list[Path]:
    """Copy Keel's templates into `destination` for a team to edit: all of them into a new or
    empty folder, or only `files` (paths relative to the templates folder, such as
    `service/README.md.tmpl`), which must not be there yet, so the rest stay Keel's."""
    if destination.exists() and not destination.is_dir():
        raise ScaffoldError(f"{destination} is a file: choose a folder")
    if not files:
        if destination.exists() and any(destination.iterdir()):
            raise ScaffoldError(
                f"{destination} is not empty: choose a new folder, or name the files to copy"
            )
        shutil.copytree(TEMPLATES, destination, dirs_exist_ok=True)
        return sorted(destination.rglob("*.tmpl"))
    known = sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.tmpl"))
    for name in files:
        if name not in known:
            raise ScaffoldError(f"{name} is not one of Keel's templates: {', '.join(known)}")
        if (destination / name).exists():
            raise ScaffoldError(f"{destination / name} exists already: edit it there")
    copied = []
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATES / name, target)
        copied.append(target)
    return copied


def _render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def _first_migration(folder: Path) -> Path:
    """Autogenerate the first migration from the new tables, against an empty database."""
    from keel.data import Database, ServiceFolder  # noqa: PLC0415 (SQLAlchemy: this command only)
    from keel.data.migrations import revision  # noqa: PLC0415

    async def write() -> str:
        with tempfile.TemporaryDirectory(prefix="keel-new-") as tmp:
            db = Database(f"sqlite+aiosqlite:///{tmp}/empty.db")
            try:
                return await revision(db, ServiceFolder.at(folder), f"create {folder.name} tables")
            finally:
                await db.dispose()

    return Path(asyncio.run(write()))


def new_service(
    root: Path,
    name: str,
    *,
    org: str | None = None,
    port: int | None = None,
    services_dir: str = "services",
    templates: Path | None = None,
    proto: Path | None = None,
) -> Created:
    """Scaffold service `name` in the repository at `root` and register it, from Keel's
    templates or a team's own (`templates`; see `template_folders`). With `proto` (a file the
    team wrote first), the package serves every service that file declares instead of a new
    proto's one (keel.scaffold.contract)."""
    root = root.resolve()
    check_name(name, root, services_dir, proto_exists=proto is not None)
    found = _templates(template_folders(root, templates))
    registry = root / services_dir / "registry.toml"
    for needed in (registry, root / "pyproject.toml"):
        if not needed.is_file():
            raise ScaffoldError(
                f"{needed.relative_to(root)} is missing: Keel registers services there "
                "(run keel new service at the workspace's root, or pass --root)"
            )
    chosen = _port(registry, port)
    folder = root / services_dir / name
    if proto is None:
        plan = _new_proto_plan(root, name, org, found, folder)
    else:
        plan = _contract_plan(root, name, proto, found, folder=folder, registry=registry)
    created = Created(plan.services[0], chosen, services=list(plan.services))
    values = {
        "name": name,
        "Name": _pascal(name),
        "NAME": name.upper(),
        "org": plan.org,
        "service": plan.services[0],
        "services": ", ".join(plan.services),
        "serves": ", ".join(f'"{s}"' for s in plan.services),
        "port": str(chosen),
        **plan.values,
    }
    try:
        for template, destination in plan.rendered.items():
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(_python(destination, _render(template, values)))
            created.written.append(destination.relative_to(root).as_posix())
        for destination, text in plan.written.items():
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(_python(destination, text))
            created.written.append(destination.relative_to(root).as_posix())
        (folder / "migrations/versions").mkdir(parents=True, exist_ok=True)
        created.written.append(_first_migration(folder).relative_to(root).as_posix())
    except BaseException:  # nothing half-made is left behind: the name stays free
        shutil.rmtree(folder, ignore_errors=True)
        if plan.new_proto is not None:
            shutil.rmtree(plan.new_proto, ignore_errors=True)
        raise
    _tidy(list(folder.rglob("*.py")))
    for service in plan.services:
        _register(registry, service, chosen)
    created.changed.append(registry.relative_to(root).as_posix())
    if _register_package(root / "pyproject.toml", name, services_dir):
        created.changed.append("pyproject.toml")
    return created


@dataclass
class _Plan:
    """What a new service package is made of: templates to render, files already written
    out, the services it serves, and the proto folder it creates (if any)."""

    org: str
    services: tuple[str, ...]
    rendered: dict[Path, Path] = field(default_factory=dict)
    written: dict[Path, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    new_proto: Path | None = None


def _destinations(found: dict[str, Path], kind: str, name: str, folder: Path) -> dict[Path, Path]:
    """Where each `<kind>/` template (and the shared migrations) goes in the service folder."""
    destinations = {}
    for key, template in sorted(found.items()):
        shared = key.startswith("service/migrations/")
        if not key.startswith(f"{kind}/") and not shared:
            continue
        relative = key.split("/", 1)[1].removesuffix(".tmpl")
        relative = relative.replace("src/pkg/", f"src/{name}/")
        relative = relative.replace("test_pkg_", f"test_{name}_")
        destinations[template] = folder / relative
    return destinations


def _new_proto_plan(
    root: Path, name: str, org: str | None, found: dict[str, Path], folder: Path
) -> _Plan:
    organisation = _org(root, org)
    proto = root / f"proto/{organisation}/{name}"
    plan = _Plan(organisation, (f"{organisation}.{name}.v1.{_pascal(name)}Service",))
    plan.rendered = {found["proto/service.proto.tmpl"]: proto / f"v1/{name}.proto"}
    plan.rendered |= _destinations(found, "service", name, folder)
    plan.new_proto = proto
    return plan


def _contract_plan(
    root: Path, name: str, proto: Path, found: dict[str, Path], *, folder: Path, registry: Path
) -> _Plan:
    from keel.scaffold import fromproto  # noqa: PLC0415
    from keel.scaffold.contract import ContractError, read  # noqa: PLC0415

    try:
        contract = read(root, proto)
    except ContractError as error:
        raise ScaffoldError(str(error)) from None
    services = tuple(s.full_name for s in contract.services)
    listed = registry.read_text()
    for service in services:
        if f'"{service}"' in listed:
            raise ScaffoldError(
                f"{service} is in {registry.name} already: another service package serves it"
            )
    pascal = _pascal(name)
    plan = _Plan(contract.package.split(".")[0], services)
    plan.rendered = _destinations(found, "contract", name, folder)
    added = {  # files a team's templates add to every service: theirs, not Keel's
        key: template
        for key, template in found.items()
        if key.startswith("service/") and not (TEMPLATES / key).exists()
    }
    plan.rendered |= _destinations(added, "service", name, folder)
    plan.values = {"proto": proto.as_posix()}
    package = folder / "src" / name
    plan.written = {
        package / "service.py": fromproto.service_module(contract, name, pascal),
        package / "__main__.py": fromproto.main_module(contract, name, pascal),
        folder / f"tests/test_{name}_service.py": fromproto.test_module(contract, name),
    }
    for path, text in plan.written.items():
        try:
            ast.parse(text)
        except SyntaxError as error:  # a name the proto allows and Python does not
            raise ScaffoldError(
                f"{proto}: the {path.name} made from it is not valid Python ({error.msg}, line "
                f"{error.lineno}: {error.text!r}); please report it, with the proto"
            ) from None
    return plan
