"""Scaffolding: `keel new service NAME` (keel.scaffold.service)."""
