"""A service's data declarations: its folder, its models and its migrations.

A service folder (`services/catalog/`) holds `pyproject.toml` with
`[tool.keel] models = "catalog.tables:Base"` (a declarative base or a MetaData), its code
under `src/` and its Alembic history under `migrations/` (env.py, script.py.mako, versions/).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData

from keel.data.database import DataError


@dataclass(frozen=True)
class ServiceFolder:
    """Where a service's models and migrations are."""

    name: str
    root: Path
    models: str

    @property
    def migrations(self) -> Path:
        """The Alembic script folder: env.py, script.py.mako, versions/."""
        return self.root / "migrations"

    @classmethod
    def at(cls, root: Path) -> ServiceFolder:
        """The service in folder `root` (its pyproject.toml must name its models)."""
        pyproject = root / "pyproject.toml"
        if not pyproject.is_file():
            raise DataError(f"{root} is not a service folder (no pyproject.toml)")
        keel_table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("keel", {})
        models = keel_table.get("models")
        if not isinstance(models, str) or ":" not in models:
            raise DataError(
                f"{pyproject}: [tool.keel] models must name the service's tables, "
                'e.g. models = "catalog.tables:Base"'
            )
        return cls(root.name, root.resolve(), models)

    @classmethod
    def named(cls, name: str, services: Path = Path("services")) -> ServiceFolder:
        """Service `name` under the `services` folder."""
        root = services / name
        if not root.is_dir():
            known = sorted(p.parent.name for p in services.glob("*/pyproject.toml"))
            found = ", ".join(known) or "none: run it from the repository's root"
            raise DataError(f"no service {name!r} under {services} (found: {found})")
        return cls.at(root)

    @classmethod
    def of_package(cls, package: str) -> ServiceFolder:
        """The service whose code is the importable `package`: the nearest folder above it
        with a pyproject.toml (services/catalog for src/catalog)."""
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise DataError(f"package {package!r} is not importable")
        for folder in Path(spec.origin).resolve().parents:
            if (folder / "pyproject.toml").is_file():
                return cls.at(folder)
        raise DataError(f"no pyproject.toml above package {package!r} ({spec.origin})")

    def metadata(self) -> MetaData:
        """The service's tables, imported from `models` (its src/ folder comes first)."""
        source = str(self.root / "src")
        if (self.root / "src").is_dir() and source not in sys.path:
            sys.path.insert(0, source)
        module_name, _, attribute = self.models.partition(":")
        try:
            found: object = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise DataError(f"{self.name}: models {self.models!r}: {error}") from None
        metadata = getattr(found, "metadata", found)
        if not isinstance(metadata, MetaData):
            raise DataError(
                f"{self.name}: models {self.models!r} is no MetaData nor declarative base"
            )
        return metadata
