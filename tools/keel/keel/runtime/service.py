"""The base of every generated `<Service>Base` class."""

from __future__ import annotations

from typing import ClassVar

from keel.runtime.spec import ServiceSpec


class ServiceBase:
    """A service implementation: subclass a generated `<Service>Base` and override its methods.

    Methods left alone answer UNIMPLEMENTED. The class carries its proto declaration in
    `__keel_service__`; it deliberately has no other attributes, so no rpc name can clash.
    """

    __keel_service__: ClassVar[ServiceSpec]
