"""The `keel` command line: parses flags and calls one layer per command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from keel.codegen.errors import BuildError, GenerateError
from keel.codegen.workspace import WorkspaceError


def _gen(args: argparse.Namespace) -> int:
    from keel.codegen import pipeline  # noqa: PLC0415 (keeps a no-op `keel gen` fast)

    try:
        result = pipeline.run(args.workspace, args.out, args.path, force=args.force)
    except (WorkspaceError, BuildError, GenerateError) as error:
        print(f"keel gen: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _breaking(args: argparse.Namespace) -> int:
    from keel.codegen import breaking  # noqa: PLC0415

    try:
        findings = breaking.check(args.workspace, args.against)
    except (WorkspaceError, breaking.BreakingError) as error:
        print(f"keel breaking: {error}", file=sys.stderr)
        return 2
    if findings:
        print(findings)
        print(f"keel breaking: breaking changes against {args.against}", file=sys.stderr)
        return 100
    print(f"keel breaking: no breaking changes against {args.against}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from keel import devrun  # noqa: PLC0415
    from keel.runtime.config import ConfigError  # noqa: PLC0415

    try:
        return asyncio.run(devrun.run(args.services, args.registry, args.gen))
    except ConfigError as error:
        print(f"keel dev: {error}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="keel", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("gen", help="generate Python from a buf v2 workspace")
    gen.add_argument("--workspace", type=Path, default=Path("."), help="folder with buf.yaml")
    gen.add_argument("--out", type=Path, default=Path("gen"), help="output folder (an import root)")
    gen.add_argument(
        "--path",
        action="append",
        default=[],
        help="generate only these import paths (files or folders); repeatable",
    )
    gen.add_argument("--force", action="store_true", help="regenerate even if inputs are unchanged")
    gen.set_defaults(run=_gen)

    brk = commands.add_parser("breaking", help="buf breaking against a git revision")
    brk.add_argument("--workspace", type=Path, default=Path("."), help="folder with buf.yaml")
    brk.add_argument(
        "--against",
        default=".git#branch=main",
        help="git revision or buf git input (default .git#branch=main)",
    )
    brk.set_defaults(run=_breaking)

    dev = commands.add_parser("dev", help="run every service locally until Ctrl-C")
    dev.add_argument("--services", type=Path, default=Path("services"), help="services folder")
    dev.add_argument(
        "--registry", type=Path, default=Path("services/registry.toml"), help="registry file"
    )
    dev.add_argument("--gen", type=Path, default=Path("gen"), help="generated code (import root)")
    dev.set_defaults(run=_dev)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `keel` console script."""
    args = parser().parse_args(argv)
    sys.exit(args.run(args))
