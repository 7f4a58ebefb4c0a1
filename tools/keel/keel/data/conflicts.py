"""A store's integrity conflicts in its domain's own terms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError


@contextmanager
def conflicts(into: Callable[[str], Exception]) -> Iterator[None]:
    """Within the block, an IntegrityError (a unique or foreign key the change breaks) is
    raised as `into(reason)`, the database's first line: the domain never sees SQLAlchemy."""
    try:
        yield
    except IntegrityError as error:
        raise into(str(error.orig).splitlines()[0]) from None
