"""The service packages of a repository (`services/<name>/`, `[tool.keel] serves`), and the
generated clients each one's code uses, found by reading its source (nothing is imported).

A package uses a client when a module imports the client class from a `*_keel` module; the
rpcs it calls are the client's methods whose names appear as attributes anywhere in the
package (`catalog.reserve_stock(...)`). Reading names is a static approximation: a method
called through `getattr` is missed, an unrelated attribute of the same name counts."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from keel.system.contracts import Contracts


@dataclass(frozen=True)
class Package:
    name: str
    """Its folder under services/ (`orders`)."""
    folder: Path
    """Relative to the repository's root."""
    serves: tuple[str, ...]
    calls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Full name of a service it calls → the rpcs (proto names) it calls, sorted."""
    words: frozenset[str] = frozenset()
    """Every name its code uses as an attribute (`order.total_cents`), a keyword argument
    (`Request(order_id=...)`) or a string (`HasField("payment")`): the message fields it may
    touch."""


def _names(source: Path) -> tuple[set[tuple[str, str]], set[str], set[str]]:
    """(module, name) imported from `*_keel` modules, the attribute names used, and the
    keyword-argument names and short identifier-like strings."""
    tree = ast.parse(source.read_text(), filename=str(source))
    imported: set[tuple[str, str]] = set()
    attributes: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg:
            others.add(node.arg)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.isidentifier()
        ):
            others.add(node.value)
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.endswith("_keel"):
                imported.update((node.module, alias.name) for alias in node.names)
            else:
                imported.update(
                    (f"{node.module}.{alias.name}", "*")
                    for alias in node.names
                    if alias.name.endswith("_keel")
                )
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    return imported, attributes, others


def _service_of(module: str, name: str, contracts: Contracts) -> list[str]:
    """The services whose generated client `name` of `module` is (`*`: any in the module)."""
    package = module.removesuffix("_keel").rpartition(".")[0]
    return [
        service.full_name
        for service in contracts.services.values()
        if service.full_name.rpartition(".")[0] == package and name in ("*", service.client_class)
    ]


def discover(root: Path, contracts: Contracts, services_dir: str = "services") -> list[Package]:
    """Every folder of `services_dir` whose pyproject.toml has `[tool.keel] serves`, with the
    clients its code uses (its src/ only: what a test calls is not a dependency)."""
    found = []
    for pyproject in sorted((root / services_dir).glob("*/pyproject.toml")):
        config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("keel", {})
        serves = tuple(config.get("serves", ()))
        if not serves:
            continue
        folder = pyproject.parent
        used: set[str] = set()
        attributes: set[str] = set()
        words: set[str] = set()
        for source in sorted((folder / "src").rglob("*.py")):
            if not source.is_file():  # an editor's lock file (a dangling link), say
                continue
            imported, names, others = _names(source)
            attributes |= names
            words |= names | others
            for module, name in imported:
                used.update(_service_of(module, name, contracts))
        calls = {
            service: tuple(
                sorted(
                    rpc.name
                    for rpc in contracts.services[service].rpcs
                    if rpc.python_name in attributes
                )
            )
            for service in sorted(used - set(serves))
        }
        found.append(
            Package(folder.name, folder.relative_to(root), serves, calls, frozenset(words))
        )
    return found
