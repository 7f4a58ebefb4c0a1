"""Consumer contracts: what each service package uses of the others' contracts, read from its code,
and which consumers a breaking change hits (`keel breaking`).

A package uses the rpcs it calls through generated clients (see keel.system.packages), and the
fields of the messages those rpcs take and return, and of the events it subscribes to, whose
names its code mentions (an attribute, a keyword argument or a string). Static and generous: a
field whose name appears anywhere in the package counts as used, so a change is never judged
harmless because the reading missed a use.

A breaking change that deletes a field marked `deprecated = true`, whose number the new version
reserves, and that no consumer uses, is allowed: that is how a field is retired.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from keel.codegen import names
from keel.system.contracts import Contracts, Rpc, message_fields, walk_messages
from keel.system.packages import Package
from keel.toolchain.breaking import Finding

_FIELD = re.compile(r'field "(\d+)" with name "([^"]+)" on message "([^"]+)"', re.IGNORECASE)
_RENAMED = re.compile(r'Field "(\d+)" on message "([^"]+)" changed name from "([^"]+)"')
_RPC = re.compile(r'RPC "([^"]+)" on service "([^"]+)"')
_MESSAGE = re.compile(r'message "([^"]+)"')
_DELETIONS = frozenset(
    {
        "FIELD_NO_DELETE",
        "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
        "FIELD_NO_DELETE_UNLESS_NAME_RESERVED",
    }
)


@dataclass(frozen=True)
class Usage:
    """What one consumer package uses of the services it calls or listens to."""

    rpcs: frozenset[tuple[str, str]]
    """(service full name, rpc name)."""
    fields: frozenset[tuple[str, str]]
    """(message full name, field name)."""


def _base_rpcs(base: descriptor_pb2.FileDescriptorSet) -> dict[str, list[Rpc]]:
    return {
        f"{file.package}.{service.name}" if file.package else service.name: [
            Rpc(
                m.name,
                names.method_name(m.name),
                m.input_type.lstrip("."),
                m.output_type.lstrip("."),
            )
            for m in service.method
        ]
        for file in base.file
        for service in file.service
    }


def usage(
    contracts: Contracts,
    packages: Iterable[Package],
    base: descriptor_pb2.FileDescriptorSet | None = None,
) -> dict[str, Usage]:
    """Each package's use of the contracts of the services it calls and the events it gets;
    with `base` (an older version of the contracts), of what either version has, so a use of
    something the new version deleted is still found."""
    rpcs_of = {name: list(service.rpcs) for name, service in contracts.services.items()}
    messages = {name: dict(fields) for name, fields in contracts.messages.items()}
    if base is not None:
        for service_name, older in _base_rpcs(base).items():
            rpcs_of.setdefault(service_name, []).extend(older)
        for message_name, older_fields in message_fields(base.file).items():
            messages[message_name] = {**older_fields, **messages.get(message_name, {})}
    merged = dataclasses.replace(contracts, messages=messages)
    found = {}
    for package in packages:
        called = {
            (service, rpc)
            for service in package.calls
            for rpc in rpcs_of.get(service, ())
            if rpc.python_name in package.words
        }
        roots = {m for _, rpc in called for m in (rpc.request, rpc.response)}
        for served in package.serves:
            if served in contracts.services:
                roots.update(contracts.services[served].subscribes)
        used_fields = {
            (message, field)
            for message in merged.reachable(roots)
            for field in messages[message]
            if field in package.words
        }
        found[package.name] = Usage(
            frozenset((service, rpc.name) for service, rpc in called), frozenset(used_fields)
        )
    return found


@dataclass(frozen=True)
class Verdict:
    """A finding, the consumers it hits (each with what of theirs it touches), and whether it
    is allowed (a deprecated, reserved, unused field retired)."""

    finding: Finding
    hits: dict[str, list[str]]
    known: bool
    """Whether the finding names something whose users can be told (a field, rpc, message)."""
    allowed: bool
    note: str


def _packages_of(files: descriptor_pb2.FileDescriptorSet | None) -> dict[str, str]:
    return {f.name: f.package for f in files.file} if files is not None else {}


def _full_names(short: str, package: str, known: Iterable[str]) -> set[str]:
    """Messages buf names `short` (it names a nested message by its own name only)."""
    prefix = f"{package}." if package else ""
    return {
        name
        for name in known
        if name.startswith(prefix) and (name == f"{prefix}{short}" or name.endswith(f".{short}"))
    }


def _deprecated_and_reserved(
    base: descriptor_pb2.FileDescriptorSet | None,
    head: descriptor_pb2.FileDescriptorSet | None,
    messages: set[str],
    number: int,
) -> tuple[bool, bool]:
    def find(
        files: descriptor_pb2.FileDescriptorSet | None,
    ) -> list[descriptor_pb2.DescriptorProto]:
        if files is None:
            return []
        return [
            m
            for f in files.file
            for n, m in walk_messages(f.package, f.message_type)
            if n in messages
        ]

    deprecated = any(
        f.number == number and f.options.deprecated for m in find(base) for f in m.field
    )
    reserved = any(r.start <= number < r.end for m in find(head) for r in m.reserved_range)
    return deprecated, reserved


def judge(
    findings: Iterable[Finding],
    base: descriptor_pb2.FileDescriptorSet | None,
    head: descriptor_pb2.FileDescriptorSet | None,
    used: dict[str, Usage],
) -> list[Verdict]:
    """Each finding with the consumers it hits, and whether it may go ahead."""
    packages = {**_packages_of(base), **_packages_of(head)}
    known = set(message_fields(base.file if base else ())) | set(
        message_fields(head.file if head else ())
    )
    verdicts = []
    for finding in findings:
        package = packages.get(finding.file, "")
        hits: dict[str, list[str]] = {}
        allowed, note, recognised = False, "", True
        if field := _FIELD.search(finding.message):
            number, name, short = int(field[1]), field[2], field[3]
            messages = _full_names(short, package, known)
            for consumer, use in used.items():
                touched = sorted(f"{m}.{name}" for m in messages if (m, name) in use.fields)
                if touched:
                    hits[consumer] = touched
            if finding.rule in _DELETIONS and not hits:
                deprecated, reserved = _deprecated_and_reserved(base, head, messages, number)
                allowed = deprecated and reserved
                if deprecated and not reserved:
                    note = f"deprecated and unused: reserve {number} (and its name) to retire it"
                elif allowed:
                    note = "allowed: deprecated, its number reserved, and no consumer uses it"
        elif renamed := _RENAMED.search(finding.message):
            messages = _full_names(renamed[2], package, known)
            for consumer, use in used.items():
                touched = sorted(
                    f"{m}.{renamed[3]}" for m in messages if (m, renamed[3]) in use.fields
                )
                if touched:
                    hits[consumer] = touched
        elif rpc := _RPC.search(finding.message):
            service = f"{package}.{rpc[2]}" if package else rpc[2]
            for consumer, use in used.items():
                if (service, rpc[1]) in use.rpcs:
                    hits[consumer] = [f"{service}.{rpc[1]}"]
        elif message := _MESSAGE.search(finding.message):
            messages = _full_names(message[1], package, known)
            for consumer, use in used.items():
                touched = sorted({m for m, _ in use.fields if m in messages})
                if touched:
                    hits[consumer] = touched
        else:
            recognised = False
        verdicts.append(Verdict(finding, hits, recognised, allowed, note))
    return verdicts


def describe(verdict: Verdict) -> list[str]:
    """The finding's line, then one line on who it hits (or that it is allowed)."""
    lines = [str(verdict.finding)]
    if verdict.hits:
        for consumer, touched in sorted(verdict.hits.items()):
            lines.append(f"  breaks consumer {consumer}: it uses {', '.join(touched)}")
    elif verdict.note:
        lines.append(f"  {verdict.note}")
    elif verdict.known:
        lines.append("  no consumer in this repository uses it (clients outside it may)")
    return lines
