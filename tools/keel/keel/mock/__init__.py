"""`keel mock`: serve any service of the workspace from its protos alone.

Every method answers valid fake data (protovalidate rules honoured, the same for a seed and a
request); stub files override answers by matching request fields, with sequences, errors with
`google.rpc` details, delays and stream contents; the calls received can be read back.

    async with MockServer(["acme.payments.v1.PaymentService"], seed=7) as mock:
        mock.stub("PaymentService/GetPayment", respond={"payment": {"paymentId": "p1"}})
        ...
        assert mock.calls("GetPayment")

`MockServer` and `Call` load on first use: `keel.mock.cli` (the `keel mock` parser) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.mock.server import MockServer
    from keel.mock.state import Call

__all__ = ["Call", "MockServer"]


def __getattr__(name: str) -> Any:
    if name == "MockServer":
        from keel.mock.server import MockServer  # noqa: PLC0415

        return MockServer
    if name == "Call":
        from keel.mock.state import Call  # noqa: PLC0415

        return Call
    raise AttributeError(f"module 'keel.mock' has no attribute {name!r}")
