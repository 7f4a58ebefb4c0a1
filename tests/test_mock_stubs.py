"""keel mock's stubs, in process (the keel_mock fixture): matching request fields, sequences,
errors with google.rpc details, delays, stream contents; the calls read back; the admin API."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from acme.orders.v1 import orders_keel, orders_pb2
from acme.payments.v1 import payments_keel, payments_pb2
from keel import errors
from keel.mock import MockServer
from keel.mock.stubs import StubError

PAYMENTS = "acme.payments.v1.PaymentService"
ORDERS = "acme.orders.v1.OrderService"
Mocks = Callable[..., MockServer]


async def until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Wait for `condition` (polled on the event loop), failing after `deadline` seconds."""
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.005)


def authorize(order_id: str, amount: int = 100) -> payments_pb2.AuthorizePaymentRequest:
    return payments_pb2.AuthorizePaymentRequest(
        order_id=order_id, amount_cents=amount, currency="EUR", payment_method_token="tok"
    )


async def test_stubs_match_request_fields_most_specific_first(keel_mock: Mocks) -> None:
    async with keel_mock(PAYMENTS) as mock:
        mock.stub("AuthorizePayment", respond={"payment": {"paymentId": "any"}})
        mock.stub(
            "PaymentService/AuthorizePayment",
            match={"regex": {"order_id": "^vip-"}},
            respond={"payment": {"paymentId": "vip"}},
        )
        mock.stub(
            f"{PAYMENTS}/AuthorizePayment",
            match={"equals": {"orderId": "vip-1", "amount_cents": 100}, "contains": {}},
            respond={"payment": {"paymentId": "vip-one-hundred"}},
        )
        mock.stub(
            "AuthorizePayment",
            match={"contains": {"payment_method_token": "gold"}},
            respond={"payment": {"paymentId": "gold"}},
        )
        mock.stub(
            "AuthorizePayment",
            match={"headers": {"X-Tenant": "beta"}},
            respond={"payment": {"paymentId": "beta"}},
        )
        async with payments_keel.PaymentServiceClient.connect(mock.address) as client:

            async def paid(request: payments_pb2.AuthorizePaymentRequest) -> str:
                return (await client.authorize_payment(request)).payment.payment_id

            assert await paid(authorize("vip-1")) == "vip-one-hundred"  # int64: "100" == 100
            assert await paid(authorize("vip-1", 200)) == "vip"
            assert await paid(authorize("o-1")) == "any"
            gold = authorize("o-2")
            gold.payment_method_token = "tok-gold-7"
            assert await paid(gold) == "gold"
            beta = await client.authorize_payment(
                authorize("o-3"), metadata=(("x-tenant", "beta"),)
            )
            assert beta.payment.payment_id == "beta"
            # Another method of the service still answers generated data.
            got = await client.get_payment(payments_pb2.GetPaymentRequest(payment_id="p"))
            assert got.payment.payment_id
        assert [c.stub != "" for c in mock.calls()] == [True] * 5 + [False]


async def test_sequence_first_fails_then_succeeds_and_the_last_repeats(keel_mock: Mocks) -> None:
    async with keel_mock(PAYMENTS) as mock:
        mock.stub(
            "CapturePayment",
            sequence=[
                {"error": {"code": "FAILED_PRECONDITION", "message": "not yet"}},
                {"respond": {"payment": {"paymentId": "p1", "state": "PAYMENT_STATE_CAPTURED"}}},
            ],
        )
        request = payments_pb2.CapturePaymentRequest(payment_id="p1")
        async with payments_keel.PaymentServiceClient.connect(mock.address) as client:
            with pytest.raises(errors.FailedPrecondition, match="not yet"):
                await client.capture_payment(request)
            for _ in range(2):
                answer = await client.capture_payment(request)
                assert answer.payment.state == payments_pb2.PAYMENT_STATE_CAPTURED
        assert mock.state.stubs[0].to_json()["used"] == 3


async def test_unavailable_once_is_retried_by_the_generated_client(keel_mock: Mocks) -> None:
    async with keel_mock(ORDERS) as mock:
        mock.stub(
            "GetOrder",
            match={"equals": {"order_id": "o-7"}},
            sequence=[
                {"error": {"code": "UNAVAILABLE", "message": "warming up"}},
                {"respond": {"order": {"orderId": "o-7"}}},
            ],
        )
        async with orders_keel.OrderServiceClient.connect(mock.address) as client:
            answer = await client.get_order(orders_pb2.GetOrderRequest(order_id="o-7"))
        assert answer.order.order_id == "o-7"
        assert len(mock.calls("GetOrder")) == 2


async def test_errors_carry_google_rpc_details(keel_mock: Mocks) -> None:
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "CARD_DECLINED",
            "domain": "payments.acme",
            "metadata": {"issuer": "bank"},
        },
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "payment_method_token", "description": "expired"}],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"},
    ]
    async with keel_mock(PAYMENTS) as mock:
        mock.stub(
            "AuthorizePayment",
            error={"code": "FAILED_PRECONDITION", "message": "declined", "details": details},
        )
        async with payments_keel.PaymentServiceClient.connect(mock.address) as client:
            with pytest.raises(errors.FailedPrecondition) as raised:
                await client.authorize_payment(authorize("o-1"))
    error = raised.value
    assert (error.message, error.reason, error.domain) == (
        "declined",
        "CARD_DECLINED",
        "payments.acme",
    )
    assert error.metadata == {"issuer": "bank"}
    assert error.field_violations == [errors.FieldViolation("payment_method_token", "expired")]
    assert error.retry_after == 2.0


async def test_a_delay_outlasts_a_shorter_deadline_and_answers_after_faster_calls(
    keel_mock: Mocks,
) -> None:
    async with keel_mock(ORDERS) as mock:
        mock.stub("GetOrder", match={"equals": {"order_id": "slow"}}, delay=30, respond={})
        async with orders_keel.OrderServiceClient.connect(mock.address) as client:
            slow = asyncio.ensure_future(
                client.get_order(orders_pb2.GetOrderRequest(order_id="slow"))
            )
            await until(lambda: bool(mock.calls("GetOrder")))  # the slow call is in
            fast = await client.get_order(orders_pb2.GetOrderRequest(order_id="fast"))
            assert fast.order.order_id
            assert not slow.done()
            slow.cancel()
            with pytest.raises(errors.DeadlineExceeded):
                await client.get_order(orders_pb2.GetOrderRequest(order_id="slow"), timeout=0.2)
        arrived = [c.request["order_id"] for c in mock.calls("GetOrder")]
        assert arrived == ["slow", "fast", "slow"]


async def test_stream_contents_then_an_error(keel_mock: Mocks) -> None:
    async with keel_mock(ORDERS) as mock:
        mock.stub(
            "WatchOrder",
            stream=[
                {"order": {"orderId": "o-1", "state": "ORDER_STATE_PENDING"}},
                {"order": {"orderId": "o-1", "state": "ORDER_STATE_CONFIRMED"}},
            ],
            error={"code": "ABORTED", "message": "watch ended"},
        )
        seen = []
        async with orders_keel.OrderServiceClient.connect(mock.address) as client:
            updates = client.watch_order(orders_pb2.WatchOrderRequest(order_id="o-1"))
            with pytest.raises(errors.Aborted, match="watch ended"):  # noqa: PT012
                async for update in updates:
                    seen.append(orders_pb2.OrderState.Name(update.order.state))
    assert seen == ["ORDER_STATE_PENDING", "ORDER_STATE_CONFIRMED"]


async def test_calls_are_read_back_with_their_request_and_metadata(keel_mock: Mocks) -> None:
    async with keel_mock(ORDERS, PAYMENTS) as mock:
        async with orders_keel.OrderServiceClient.connect(mock.address) as client:
            await client.get_order(
                orders_pb2.GetOrderRequest(order_id="o-1"), metadata=(("x-tenant", "acme"),)
            )
            await client.list_orders(orders_pb2.ListOrdersRequest(customer_id="c-1", page_size=5))
        (call,) = mock.calls("acme.orders.v1.OrderService/GetOrder")
        assert call.request == {"order_id": "o-1", "customer_id": ""}
        assert call.metadata["x-tenant"] == "acme"
        assert call.time.endswith("Z")
        assert [c.method.rpartition("/")[2] for c in mock.calls()] == ["GetOrder", "ListOrders"]
        assert mock.calls("ListOrders")[0].request["page_size"] == 5
        mock.clear_calls()
        assert mock.calls() == []


def test_bad_stubs_are_refused_naming_the_problem(tmp_path: Path) -> None:
    mock = MockServer([PAYMENTS])
    with pytest.raises(StubError, match="no served method is 'Nope'"):
        mock.stub("Nope", respond={})
    with pytest.raises(StubError, match=r"GetPayment.*nope"):
        mock.stub("GetPayment", respond={"nope": 1})
    with pytest.raises(StubError, match="unknown status code 'BROKEN'"):
        mock.stub("GetPayment", error={"code": "BROKEN"})
    with pytest.raises(StubError, match="respond` or `error`, not both"):
        mock.add_stubs({"method": "GetPayment", "respond": {}, "error": {"code": 5}})
    broken = tmp_path / "stubs.json"
    broken.write_text("{not json")
    with pytest.raises(StubError, match=r"stubs\.json"):
        MockServer([PAYMENTS], stub_files=[broken])
    assert mock.state.stubs == []


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_admin_api_adds_stubs_and_reads_calls(keel_mock: Mocks) -> None:
    async with keel_mock(PAYMENTS, admin_port=0) as mock:
        admin = f"http://127.0.0.1:{mock.admin_port}"

        async def http(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return await asyncio.to_thread(_http, method, admin + path, body)

        status, added = await http(
            "POST",
            "/stubs",
            {"stubs": [{"method": "GetPayment", "respond": {"payment": {"paymentId": "admin"}}}]},
        )
        assert status == 200
        assert len(added["ids"]) == 1
        assert (await http("POST", "/stubs", {"method": "Nope", "respond": {}}))[0] == 400
        async with payments_keel.PaymentServiceClient.connect(mock.address) as client:
            got = await client.get_payment(payments_pb2.GetPaymentRequest(payment_id="p-9"))
            assert got.payment.payment_id == "admin"
            status, calls = await http("GET", "/calls?method=GetPayment")
            assert calls["calls"][0]["request"] == {"payment_id": "p-9"}
            assert calls["calls"][0]["stub"] == added["ids"][0]
            assert (await http("DELETE", "/stubs"))[1] == {"removed": 1}
            got = await client.get_payment(payments_pb2.GetPaymentRequest(payment_id="p-9"))
            assert got.payment.payment_id != "admin"
        assert (await http("DELETE", "/calls"))[0] == 200
        assert (await http("GET", "/calls"))[1] == {"calls": []}
        assert (await http("POST", "/events/acme.orders.v1.OrderPlaced", {}))[0] == 503
        assert (await http("GET", "/nothing"))[0] == 404


async def test_a_mock_the_test_did_not_stop_is_stopped(keel_mock: Mocks) -> None:
    mock = keel_mock(PAYMENTS)
    await mock.start()
    async with payments_keel.PaymentServiceClient.connect(mock.address) as client:
        got = await client.get_payment(payments_pb2.GetPaymentRequest(payment_id="p"))
    assert got.payment.payment_id  # (keel_mock stops it after the test)
