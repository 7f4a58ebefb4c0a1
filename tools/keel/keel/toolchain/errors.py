"""Errors of `keel gen` that the CLI reports (a light module: no protobuf import)."""


class BuildError(Exception):
    """The protos do not compile; the message is buf's, with the user's file paths and lines."""


class GenerateError(Exception):
    """A generator refused the protos; the message says which and why."""
