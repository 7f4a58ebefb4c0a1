"""The events part of a `*_keel.py` module: EventSpec constants, publishers, subscribers."""

from __future__ import annotations

from typing import Protocol

from keel.codegen.events import Event
from keel.codegen.model import Service, TypeRef
from keel.codegen.text import docstring, literal


class Writer(Protocol):
    """Where the lines go, and how the module names a message class and an event's spec."""

    def emit(self, *lines: str) -> None: ...

    def ref(self, ref: TypeRef) -> str: ...

    def spec(self, event: Event) -> str: ...


def event_spec(out: Writer, event: Event) -> None:
    """The EventSpec constant of an event declared in the file."""
    out.emit(
        "",
        f"{event.constant} = keel.events.EventSpec(",
        f"    subject={literal(event.subject)},",
        f"    message={out.ref(event.message)},",
        f"    stream={literal(event.stream)},",
        f"    name={literal(event.full_name)},",
        ")",
    )
    summary = event.comment or f"The event {event.full_name}."
    out.emit(*docstring(f"{summary}\n\nSubject: {event.subject}", ""))


def publisher(out: Writer, service: Service) -> None:
    """The publisher class of a service that publishes events."""
    out.emit("", "", f"class {service.name}Publisher(keel.events.Publisher):")
    doc = (
        f"Publishes the events of {service.full_name} through its outbox.\n\n"
        f"`{service.name}Publisher(session)`: each method adds the event to the session's\n"
        "transaction (it is sent once that commits) and returns the event id."
    )
    specs = [out.spec(event) for event in service.publishes]
    if len(specs) == 1:  # as ruff formats it: a one-element tuple stays on its line
        out.emit(*docstring(doc, "    "), "", f"    __keel_publishes__ = ({specs[0]},)")
    else:
        out.emit(*docstring(doc, "    "), "", "    __keel_publishes__ = (")
        out.emit(*(f"        {spec}," for spec in specs), "    )")
    for event in service.publishes:
        out.emit(
            "",
            f"    async def {event.publish_method}(",
            "        self,",
            f"        event: {out.ref(event.message)},",
            "    ) -> str:",
            *docstring(f"Publish {event.message.name} on {event.subject}.", "        "),
            "        return await self._publish(",
            f"            {out.spec(event)},",
            "            event,",
            "        )",
        )


def subscriber(out: Writer, service: Service) -> None:
    """The subscriber base class of a service that subscribes to events."""
    out.emit("", "", f"class {service.name}Subscriber(keel.events.Subscriber, abc.ABC):")
    doc = (
        f"Handles the events {service.full_name} subscribes to.\n\n"
        "Subclass and implement every `on_*` method (they are abstract): each runs in the\n"
        "transaction of the event's inbox row (`context.session`)."
    )
    out.emit(*docstring(doc, "    "), "")
    out.emit(
        "    __keel_subscriber__ = keel.events.SubscriberSpec(",
        f"        service={literal(service.full_name)},",
        "        handlers=(",
    )
    for event in service.subscribes:
        out.emit(
            "            keel.events.Handler(",
            f"                spec={out.spec(event)},",
            f"                method={literal(event.handler_method)},",
            "            ),",
        )
    out.emit("        ),", "    )")
    for event in service.subscribes:
        out.emit(
            "",
            "    @abc.abstractmethod",
            f"    async def {event.handler_method}(",
            "        self,",
            f"        event: {out.ref(event.message)},",
            "        context: keel.events.EventContext,",
            "    ) -> None:",
            *docstring(f"Handle {event.message.name} from {event.subject}.", "        "),
            "        raise NotImplementedError",
        )
