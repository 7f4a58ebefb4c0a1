"""keel.gateway.fieldpaths: a violation's field path, in the JSON client's terms."""

from __future__ import annotations

import json
import re

import pytest
from acme.orders.v1 import orders_pb2
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st
from keel.gateway import status
from keel.gateway.fieldpaths import json_path

ORDER = orders_pb2.CreateOrderRequest.DESCRIPTOR
STRUCT = struct_pb2.Struct.DESCRIPTOR


@pytest.mark.parametrize(
    ("path", "renamed"),
    [
        ("payment_method_token", "paymentMethodToken"),
        ("lines", "lines"),
        ("lines[0].product_id", "lines[0].productId"),
        ("", ""),
        ("no_such_field.sub_field", "no_such_field.sub_field"),  # unknown: kept
        ("customer_id[3]", "customerId[3]"),
        ("lines[0].product_id.deeper_still", "lines[0].productId.deeper_still"),
    ],
)
def test_each_field_is_named_by_its_json_name(path: str, renamed: str) -> None:
    assert json_path(ORDER, path) == renamed


def test_map_values_are_walked_into_and_keys_kept() -> None:
    path = 'fields["a.b_c"].struct_value.fields["x]"].list_value.values[2].number_value'
    assert json_path(STRUCT, path) == (
        'fields["a.b_c"].structValue.fields["x]"].listValue.values[2].numberValue'
    )
    # A map field not subscripted has no fields of its own to rename after it.
    assert json_path(STRUCT, "fields.struct_value") == "fields.struct_value"


_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_]")


@given(
    st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(["lines", "product_id", "[0]", '["k.]"]', ".", "x_y", " "]), max_size=8
        ).map("".join),
    )
)
def test_any_path_is_answered_and_only_names_change(path: str) -> None:
    renamed = json_path(ORDER, path)
    assert _NAME_CHARACTERS.sub("", renamed) == _NAME_CHARACTERS.sub("", path)


def _bad_request(message: str, *violations: tuple[str, str]) -> status_pb2.Status:
    found = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(found)
    return status_pb2.Status(code=3, message=message, details=[packed])


@pytest.mark.parametrize(
    ("message", "said"),
    [
        # A message that lists the violations is listed again in JSON names, with or without
        # keel.runtime.validation's "invalid <type>: " before them ...
        (
            "lines[0].product_id: no such product; payment_method_token: declined",
            "lines[0].productId: no such product; paymentMethodToken: declined",
        ),
        (
            "invalid acme.orders.v1.CreateOrderRequest: lines[0].product_id: no such product; "
            "payment_method_token: declined",
            "invalid acme.orders.v1.CreateOrderRequest: lines[0].productId: no such product; "
            "paymentMethodToken: declined",
        ),
        # ... any other message is the service's own words, kept as they are.
        ("payment_method_token was declined", "payment_method_token was declined"),
    ],
)
def test_an_error_message_listing_its_violations_names_them_as_json_does(
    message: str, said: str
) -> None:
    found = _bad_request(
        message, ("lines[0].product_id", "no such product"), ("payment_method_token", "declined")
    )
    body = json.loads(status.from_status(found, ORDER))
    assert body["message"] == said
    fields = [v["field"] for v in body["details"][0]["fieldViolations"]]
    assert fields == ["lines[0].productId", "paymentMethodToken"]
