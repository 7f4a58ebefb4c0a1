"""Source positions of a file's locations (`source_code_info`), for errors that name
`file:line:column`."""

from __future__ import annotations

from collections import Counter

from google.protobuf import descriptor_pb2


class Positions:
    """Source positions (1-based line, column) of one file's locations."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.spans: dict[tuple[int, ...], tuple[int, int]] = {}
        self.counts: Counter[tuple[int, ...]] = Counter()
        for location in file.source_code_info.location:
            path = tuple(location.path)
            self.spans.setdefault(path, (location.span[0] + 1, location.span[1] + 1))
            if path:
                self.counts[path[:-1]] += 1

    def of(self, path: tuple[int, ...], elements: int = 0) -> tuple[int, int] | None:
        """The position of `path`, else of its closest ancestor with one. `elements`: the
        length of the list `path` ends in an index of; buf gives one location per occurrence
        of the field (a `[a, b]` literal is one), so an index maps only if the counts match."""
        if elements and self.counts[path[:-1]] != elements:
            path = (*path[:-1], 0)
        while path and path not in self.spans:
            path = path[:-1]
        return self.spans.get(path)
