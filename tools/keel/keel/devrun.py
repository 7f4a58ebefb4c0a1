"""The former path of `keel dev` (now keel.dev), named by the import-linter contracts in
pyproject.toml; nothing else imports it."""

from keel.dev import DevService, discover, run

__all__ = ["DevService", "discover", "run"]
