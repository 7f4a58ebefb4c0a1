"""`keel mock`: serve any service of the workspace from its protos alone.

Every method answers valid fake data (protovalidate rules honoured, the same for a seed and a
request); stub files override answers by matching request fields, with sequences, errors with
`google.rpc` details, delays and stream contents; the calls received can be read back.

    async with MockServer(["acme.payments.v1.PaymentService"], seed=7) as mock:
        mock.stub("PaymentService/GetPayment", respond={"payment": {"paymentId": "p1"}})
        ...
        assert mock.calls("GetPayment")
"""

from keel.mock.server import MockServer
from keel.mock.state import Call

__all__ = ["Call", "MockServer"]
