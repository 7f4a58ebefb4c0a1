"""Alembic's environment for payments: Keel's (tables from pyproject's [tool.keel] models)."""

from keel.data import run_env

run_env()
