"""Python names for proto things: modules, methods, constants."""

from __future__ import annotations

import keyword

from keel.naming import snake_case

# Names generated classes already use, or that a Python class cannot take as a method.
RESERVED_METHOD_NAMES = frozenset(
    {
        *keyword.kwlist,
        "connect",
        "close",
        "channel",
        "_callable",
        "_guard",
        "_observer",
        "_unary",
        "_stream",
        "_timeout",
        "_unary_unary",
        "_unary_stream",
        "_stream_unary",
        "_stream_stream",
    }
)


def method_name(rpc_name: str) -> str:
    """The Python method for an rpc: snake_case, with `_` appended to reserved names."""
    name = snake_case(rpc_name)
    return f"{name}_" if name in RESERVED_METHOD_NAMES else name


def constant_name(*parts: str) -> str:
    """`("OrderService", "CreateOrder")` → `ORDER_SERVICE__CREATE_ORDER`."""
    return "__".join(snake_case(part).upper() for part in parts)


def proto_module(proto_file: str, suffix: str = "_pb2") -> str:
    """The module protoc's Python generator writes for `a/b-c.proto`: `a.b_c_pb2`."""
    stem = proto_file.removesuffix(".proto")
    return stem.replace("-", "_").replace("/", ".") + suffix


def module_path(module: str) -> str:
    """`a.b.c_keel` → `a/b/c_keel.py`."""
    return module.replace(".", "/") + ".py"


# Names a generated publisher cannot take as a method (keel.events.Publisher's attributes).
RESERVED_PUBLISHER_NAMES = frozenset({*keyword.kwlist, "session"})


def event_method(message_name: str) -> str:
    """A generated publisher's method for an event message: `OrderPlaced` → `order_placed`;
    a reserved name (a Python keyword, `session`) gets a trailing underscore."""
    name = snake_case(message_name)
    return f"{name}_" if name in RESERVED_PUBLISHER_NAMES else name
