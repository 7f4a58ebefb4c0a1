"""The docs page's system diagram (Mermaid), drawn from the documents the page serves.

A node per service: the services the AsyncAPI document names (`x-keel-service` of its
operations) and the OpenAPI document's (its operations' tags), and dotted arrows from each
event's publisher to its subscribers, labelled with the events, as `keel graph` draws them.
The calls between services are not in either document (`keel graph` reads them from each
service's code, docs/architecture.md): a gateway or a service does not have that code.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from keel.gateway.events_doc import pointer

_UNSAFE = re.compile(r"[^A-Za-z0-9]")


def _id(name: str) -> str:
    """A node id, one per name (as keel.system.graph makes them): `s_` first, each character
    other than a letter or digit written as `_<hex>_`."""
    return "s_" + _UNSAFE.sub(lambda found: f"_{ord(found[0]):x}_", name)


def _label(name: str) -> str:
    package, _, short = name.rpartition(".")
    return f'["<b>{short}</b><br/>{package}"]' if package else f'["<b>{short}</b>"]'


def services(
    openapi: dict[str, Any], asyncapi: dict[str, Any] | None, known: Iterable[str] = ()
) -> list[str]:
    """`known` and the services the documents name: full names, and the short name of a
    service only the OpenAPI document's tags name (its operations' tags are short names)."""
    found: list[str] = list(dict.fromkeys(known))
    for operation in (asyncapi or {}).get("operations", {}).values():
        service = operation.get("x-keel-service")
        if isinstance(service, str) and service not in found:
            found.append(service)
    shorts = {name.rpartition(".")[2] for name in found}
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for tag in operation.get("tags", ()) if isinstance(operation, dict) else ():
                if tag not in shorts:
                    shorts.add(tag)
                    found.append(tag)
    return found


def mermaid(
    names: Collection[str], asyncapi: dict[str, Any] | None, own: Collection[str] = ()
) -> str:
    """A Mermaid flowchart of `names` and the events between them; `own` are drawn bold (the
    services of the process that serves the page)."""
    document = asyncapi or {}
    channels: dict[str, dict[str, list[str]]] = {}
    for operation in document.get("operations", {}).values():
        channel = pointer(str(operation.get("channel", {}).get("$ref", "#/")))[-1]
        action = operation.get("action")
        service = operation.get("x-keel-service")
        if isinstance(service, str) and action in ("send", "receive"):
            channels.setdefault(channel, {"send": [], "receive": []})[action].append(service)
    flows: dict[tuple[str, str], set[str]] = {}
    for channel, ends in channels.items():
        found = document.get("channels", {}).get(channel, {})
        events = list(found.get("messages", {})) or [channel]  # the messages by name
        for publisher in ends["send"]:
            for subscriber in ends["receive"]:
                flows.setdefault((publisher, subscriber), set()).update(events)
    everyone = list(dict.fromkeys([*names, *own, *(s for pair in flows for s in pair)]))
    lines = ["flowchart LR"]
    lines += [f"  {_id(name)}{_label(name)}" for name in everyone]
    for (source, target), labels in sorted(flows.items()):
        lines.append(f'  {_id(source)} -. "{", ".join(sorted(labels))}" .-> {_id(target)}')
    if own:
        lines.append("  classDef own stroke-width:3px")
        lines.append(f"  class {','.join(_id(name) for name in own)} own")
    return "\n".join(lines) + "\n"


_SERVICE_NODE = "%% keel-service "  # keel.system.graph.SERVICE_NODE (kept apart: no import)


def outlined(source: str, own: Collection[str] = ()) -> str:
    """`keel graph`'s diagram (gen/system.mmd) with the nodes drawing `own` in bold: its
    `%% keel-service <service> <node>` comments say which node draws which service."""
    nodes = {}
    for line in source.splitlines():
        if line.startswith(_SERVICE_NODE):
            service, _, node = line[len(_SERVICE_NODE) :].partition(" ")
            nodes[service] = node.strip()
    mine = [nodes[name] for name in own if name in nodes]
    if not mine:
        return source
    lines = [source.rstrip("\n"), "  classDef own stroke-width:3px"]
    lines.append(f"  class {','.join(dict.fromkeys(mine))} own")
    return "\n".join(lines) + "\n"
