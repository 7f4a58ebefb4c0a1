"""The catalog's settings from CATALOG_* variables, and what they give the rules."""

from __future__ import annotations

import pytest
from catalog.domain import Policy
from catalog.settings import CatalogSettings, SettingsError, load


def test_defaults_and_variables_become_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load().policy() == Policy()
    monkeypatch.setenv("CATALOG_CURRENCY", "CHF")
    monkeypatch.setenv("CATALOG_MAX_PAGE_SIZE", "20")
    monkeypatch.setenv("CATALOG_DEFAULT_PAGE_SIZE", "10")
    monkeypatch.setenv("CATALOG_MAX_LINE_QUANTITY", "3")
    policy = load().policy()
    assert (policy.currency, policy.max_page_size, policy.max_line_quantity) == ("CHF", 20, 3)
    assert (policy.page_size(0), policy.page_size(7), policy.page_size(400)) == (10, 7, 20)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CATALOG_CURRENCY", "euro", "CATALOG_CURRENCY"),
        ("CATALOG_MAX_PAGE_SIZE", "501", "CATALOG_MAX_PAGE_SIZE"),
        ("CATALOG_DEFAULT_PAGE_SIZE", "0", "CATALOG_DEFAULT_PAGE_SIZE"),
        ("CATALOG_MAX_RESTOCK", "many", "CATALOG_MAX_RESTOCK"),
        ("CATALOG_CURENCY", "EUR", "CATALOG_CURENCY"),  # a typo is not silently ignored
    ],
)
def test_a_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=named):
        load()


def test_the_default_page_size_is_within_the_maximum() -> None:
    with pytest.raises(ValueError, match="CATALOG_DEFAULT_PAGE_SIZE"):
        CatalogSettings(default_page_size=100, max_page_size=10)
