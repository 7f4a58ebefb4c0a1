"""keel.data page tokens: opaque, round-trip their key, refuse what they did not make."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from keel.data import PageTokenError, decode_page_token, encode_page_token

_keys = st.lists(st.one_of(st.text(), st.integers(-(2**63), 2**63)), min_size=1, max_size=3)


@given(_keys)
def test_a_token_gives_back_its_key(key: list[str | int]) -> None:
    token = encode_page_token(key)
    assert token.isascii()
    assert all(c.isalnum() or c in "-_" for c in token)  # safe in a URL as it is
    assert decode_page_token(token) == tuple(key)


def test_the_empty_token_is_the_first_page() -> None:
    assert decode_page_token("") == ()


@pytest.mark.parametrize("token", ["2", "abc", "²", "WzJd", "eyJhIjoxfQ", "W10", "WzEsdHJ1ZV0"])
def test_tokens_this_code_did_not_make_are_refused(token: str) -> None:
    with pytest.raises(PageTokenError):
        decode_page_token(token)
