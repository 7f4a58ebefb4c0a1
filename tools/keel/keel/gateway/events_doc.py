"""The AsyncAPI document of a few services: the channels they publish or subscribe to.

`keel gen` writes one document for the whole system (`asyncapi.json`); REST inside a service
serves the part of it that concerns that service, with only the components it refers to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any


def _refs(node: Any) -> Iterator[str]:
    """Every local `$ref` in a JSON value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def pointer(ref: str) -> list[str]:
    """The segments of a local JSON pointer (`#/components/messages/a.B`)."""
    return [part.replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]


def for_services(document: dict[str, Any], services: Collection[str]) -> dict[str, Any]:
    """`document` with only the operations of `services` (by `x-keel-service`), the channels
    those use and the components either refers to, directly or through other components."""
    operations = {
        key: op
        for key, op in document.get("operations", {}).items()
        if op.get("x-keel-service") in services
    }
    wanted: set[tuple[str, ...]] = set()
    pending = list(_refs(operations))
    while pending:
        parts = tuple(pointer(pending.pop()))
        key = parts[:2] if parts[:1] == ("channels",) else parts[:3]
        if len(key) < 2 or key in wanted:
            continue
        wanted.add(key)
        node: Any = document
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        pending += _refs(node)
    kept = {k: v for k, v in document.items() if k not in ("channels", "operations", "components")}
    kept["channels"] = {
        name: channel
        for name, channel in document.get("channels", {}).items()
        if ("channels", name) in wanted
    }
    kept["operations"] = operations
    components = {
        section: {
            name: item for name, item in items.items() if ("components", section, name) in wanted
        }
        for section, items in document.get("components", {}).items()
    }
    if any(components.values()):
        kept["components"] = {section: items for section, items in components.items() if items}
    return kept
