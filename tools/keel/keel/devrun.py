"""The former path of `keel dev` (now keel.dev), named by the import-linter contracts in
pyproject.toml; nothing else imports it."""

from keel.dev.services import DevService, discover
from keel.dev.session import run

__all__ = ["DevService", "discover", "run"]
