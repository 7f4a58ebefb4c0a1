"""An AsyncAPI 3.0 document of the events of one plugin request (`asyncapi.json`).

A channel per subject; an operation per service and event: `send` for what it publishes,
`receive` for what it subscribes to. Payload schemas are the proto3 JSON mapping of the
messages (the OpenAPI writer's schemas), each message naming its proto type (`x-proto-type`);
on the wire the payload is the message's protobuf binary form.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.codegen import model, openapi
from keel.codegen.events import Event

CONTENT_TYPE = "application/x-protobuf"
HEADERS_SCHEMA = "keel.EventHeaders"
HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "NATS headers Keel sets on every event.",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "description": "The event id: JetStream drops a second message with the same id "
            "within its duplicate window, a subscriber's inbox after it.",
        },
        "Keel-Event-Id": {
            "type": "string",
            "description": "The event id (`evt_` + a ULID, sortable by creation time).",
        },
        "Keel-Event": {"type": "string", "description": "The full proto name of the message."},
        "Keel-Published-At": {
            "type": "string",
            "format": "date-time",
            "description": "When the event was committed with the state change that caused it.",
        },
        "x-request-id": {
            "type": "string",
            "description": "The correlation id of the call that published the event.",
        },
        "traceparent": {
            "type": "string",
            "description": "W3C trace context of the publishing call: the handler's span "
            "joins its trace.",
        },
        "tracestate": {"type": "string", "description": "W3C trace state, when there is one."},
    },
    "required": ["Nats-Msg-Id", "Keel-Event-Id", "Keel-Event", "Keel-Published-At", "x-request-id"],
}


def _operation(service: model.Service, event: Event, action: str) -> dict[str, Any]:
    verb = "publishes" if action == "send" else "subscribes to"
    method = event.publish_method if action == "send" else event.handler_method
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{event.subject}"},
        "messages": [{"$ref": f"#/channels/{event.subject}/messages/{event.message.name}"}],
        "summary": f"{service.full_name} {verb} {event.full_name}.",
        "x-keel-service": service.full_name,
        "x-keel-method": method,
    }


def render(files: tuple[model.File, ...], writer: openapi.Writer) -> str | None:
    """The document of the events `files` declare, publish or subscribe to; None if none."""
    events: dict[str, Event] = {}
    operations: dict[str, dict[str, Any]] = {}
    for file in files:
        events.update((event.full_name, event) for event in file.events_used)
        for service in file.services:
            for action, listed in (("send", service.publishes), ("receive", service.subscribes)):
                for event in listed:
                    key = f"{service.full_name}.{action}.{event.message.name}"
                    operations[key] = _operation(service, event, action)
    if not events:
        return None
    schemas = writer.schemas(*sorted({event.proto for event in events.values()}))
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in sorted(events.values(), key=lambda e: e.subject):
        message: dict[str, Any] = {
            "name": event.message.name,
            "title": event.full_name,
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
            "payload": schemas.ref(f".{event.full_name}"),
            "x-proto-type": event.full_name,
        }
        if event.comment:
            message["summary"] = event.comment.split("\n")[0]
            message["description"] = event.comment
        messages[event.full_name] = message
        channels[event.subject] = {
            "address": event.subject,
            "messages": {event.message.name: {"$ref": f"#/components/messages/{event.full_name}"}},
            "description": f"JetStream stream {event.stream}.",
            "x-keel-stream": event.stream,
        }
    document = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Events",
            "version": "v1",
            "description": "Events declared in the protos (keel gen). Payloads are protobuf "
            "binary; their schemas show the messages' proto3 JSON mapping.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {
            "schemas": {**dict(sorted(schemas.components.items())), HEADERS_SCHEMA: HEADERS},
            "messages": messages,
        },
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
