"""`keel.genroot` is `keel_genroot`: generated code imports whatever its package names.

The module lives at the top level so that the virtualenv's `.pth` file can install its finder at
start-up without importing the `keel` package (which would import grpc in every interpreter and
keep pytest from rewriting the asserts of Keel's pytest plugin).
"""

from keel_genroot import (
    Blocked,
    UnimportableError,
    install,
    pth_lines,
    unimportable,
)

__all__ = ["Blocked", "UnimportableError", "install", "pth_lines", "unimportable"]
