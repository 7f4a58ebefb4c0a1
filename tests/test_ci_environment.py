"""CI's own script must not give the services an environment they refuse.

Keel refuses unknown `KEEL_*` variables (a typo in a setting is an error, not a silent default), so
a `KEEL_*` variable that `.ci/run` or the Makefile exports for some other purpose would fail every
service at start, in CI only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from keel.runtime.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = re.compile(r"^\s*(?:export\s+)?(KEEL_[A-Z0-9_]+)\s*[:?]?=", re.MULTILINE)


def test_keel_variables_set_by_ci_and_make_are_settings_keel_knows() -> None:
    names = {
        name
        for script in (ROOT / ".ci" / "run", ROOT / "Makefile")
        for name in EXPORTED.findall(script.read_text(encoding="utf-8"))
    }
    refused = []
    for name in sorted(names):
        try:
            Settings.from_env({name: "1"})
        except ConfigError as error:
            if "unknown setting" in str(error):
                refused.append(name)
    assert not refused, f"Keel refuses these variables that CI exports: {refused}"


def test_the_check_finds_an_exported_unknown_variable() -> None:
    assert EXPORTED.findall('export KEEL_TEST_ARTIFACTS="${X:-y}"\n') == ["KEEL_TEST_ARTIFACTS"]
    with pytest.raises(ConfigError, match="unknown setting KEEL_TEST_ARTIFACTS"):
        Settings.from_env({"KEEL_TEST_ARTIFACTS": "1"})
