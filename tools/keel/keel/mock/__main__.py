"""`python -m keel.mock ...`: the `keel mock` command (see keel.mock.cli)."""

from __future__ import annotations

import argparse
import sys

from keel.mock.cli import add_arguments, run


def main() -> None:
    parser = argparse.ArgumentParser(prog="keel mock", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
