"""Alembic's environment for orders: Keel's (tables from pyproject's [tool.keel] models)."""

from keel.data import run_env

run_env()
