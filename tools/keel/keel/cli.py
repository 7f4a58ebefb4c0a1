"""The `keel` command line: parses flags and calls one layer per command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.events import dlq as events_commands
from keel.mock import cli as mock_commands
from keel.toolchain.errors import BuildError, GenerateError
from keel.toolchain.workspace import WorkspaceError

if TYPE_CHECKING:
    from keel.system.contracts import Contracts
    from keel.system.packages import Package


def _gen(args: argparse.Namespace) -> int:
    from keel import genroot  # noqa: PLC0415
    from keel.codegen import pipeline  # noqa: PLC0415 (keeps a no-op `keel gen` fast)
    from keel.toolchain import outputs  # noqa: PLC0415

    try:
        result = pipeline.run(args.workspace, args.out, args.path, force=args.force)
    except (WorkspaceError, BuildError, GenerateError) as error:
        print(f"keel gen: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    # A folder named as a package found elsewhere (`test/`, `email/`) is merged into it at
    # import time (keel.genroot); one named as a module (`types/`) can never be imported.
    modules = [f for f in outputs.Manifest.read(args.out).files if f.endswith(".py")]
    blocked = genroot.unimportable(args.out, modules)
    for each in blocked:
        print(f"keel gen: {each}", file=sys.stderr)
    return 1 if blocked else 0


def _breaking(args: argparse.Namespace) -> int:
    from keel.system import consumers  # noqa: PLC0415
    from keel.toolchain import breaking  # noqa: PLC0415

    try:
        comparison = breaking.compare(args.workspace, args.against)
        verdicts: list[consumers.Verdict] = []
        if comparison.findings:
            found, packages = _system(args)
            used = consumers.usage(found, packages, comparison.base)
            verdicts = consumers.judge(comparison.findings, comparison.base, comparison.head, used)
    except (WorkspaceError, BuildError, GenerateError, breaking.BreakingError) as error:
        print(f"keel breaking: {error}", file=sys.stderr)
        return 2
    for verdict in verdicts:
        print("\n".join(consumers.describe(verdict)))
    if any(not v.allowed for v in verdicts):
        print(f"keel breaking: breaking changes against {args.against}", file=sys.stderr)
        return 100
    print(f"keel breaking: no breaking changes against {args.against}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from keel.dev import session  # noqa: PLC0415
    from keel.runtime.config import ConfigError  # noqa: PLC0415

    try:
        return asyncio.run(
            session.run(
                args.services,
                args.registry,
                args.gen,
                args.gateway_port,
                args.state_dir,
                watch=args.watch,
            )
        )
    except ConfigError as error:
        print(f"keel dev: {error}", file=sys.stderr)
        return 2


def _db(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from keel import data  # noqa: PLC0415 (SQLAlchemy and Alembic load for `keel db` only)
    from keel.data import migrations  # noqa: PLC0415
    from keel.runtime import config  # noqa: PLC0415

    async def run(service: data.ServiceFolder, db: data.Database) -> str:
        try:
            if args.action == "upgrade":
                return f"at revision {await data.upgrade(db, service, args.revision)}"
            if args.action == "downgrade":
                now = await data.downgrade(db, service, args.revision)
                return f"at revision {now}" if now else "at base (no tables)"
            if args.action == "revision":
                return f"wrote {await data.revision(db, service, args.message)}"
            await data.check(db, service)
            return "the models and the migrations agree"
        finally:
            await db.dispose()

    try:
        service = data.ServiceFolder.named(args.name, args.services)
        db = data.Database.for_service(service.name)
        said = asyncio.run(run(service, db))
    except config.ConfigError as error:
        print(f"keel db: configuration error: {error}", file=sys.stderr)
        return 2
    except migrations.PROBLEMS as error:
        print(f"keel db {args.action} {args.name}: {migrations.one_line(error)}", file=sys.stderr)
        return 1
    print(f"keel db {args.action} {args.name}: {said} ({db.url.render_as_string()})")
    return 0


def _saga(args: argparse.Namespace) -> int:
    from keel.saga import __main__ as saga_command  # noqa: PLC0415 (SQLAlchemy on use only)

    return saga_command.run(args.action, args)


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return value


def _gateway(args: argparse.Namespace) -> int:
    from keel import genroot  # noqa: PLC0415
    from keel.gateway import serve  # noqa: PLC0415
    from keel.runtime import config  # noqa: PLC0415

    targets: dict[str, str] = {}
    rest_targets: dict[str, str] = {}
    for flag, items, found in (
        ("--target", args.target, targets),
        ("--rest-target", args.rest_target, rest_targets),
    ):
        for item in items:
            service, sep, address = item.partition("=")
            if not sep or not service or not address:
                print(f"keel gateway: {flag} {item!r}: expected SERVICE=HOST:PORT", file=sys.stderr)
                return 2
            found[service] = address
    try:
        rest_targets = {name: config.rest_address(a) for name, a in rest_targets.items()}
    except ValueError as error:
        print(f"keel gateway: --rest-target: {error}", file=sys.stderr)
        return 2
    try:
        worker_count = args.workers or config.current().workers
    except config.ConfigError as error:
        print(f"keel gateway: configuration error: {error}", file=sys.stderr)
        return 2
    if worker_count > 1 and args.port == 0:
        print("keel gateway: --workers > 1 needs a fixed --port, not 0", file=sys.stderr)
        return 2
    try:
        middleware = [serve.load_middleware(reference) for reference in args.middleware]
    except ValueError as error:
        print(f"keel gateway: --middleware {error}", file=sys.stderr)
        return 2
    try:
        return serve.run(
            args.gen,
            targets,
            args.default_target,
            args.host,
            args.port,
            worker_count=worker_count,
            middleware=middleware,
            rest_targets=rest_targets,
            upstream=args.upstream,
        )
    except genroot.UnimportableError as error:  # raised while the routes load, before serving
        for line in str(error).splitlines():
            print(f"keel gateway: {line}", file=sys.stderr)
        return 2
    except config.ConfigError as error:  # e.g. --upstream rest without a service's REST port
        print(f"keel gateway: configuration error: {error}", file=sys.stderr)
        return 2


def _system(args: argparse.Namespace) -> tuple[Contracts, list[Package]]:
    from keel.system import contracts, packages  # noqa: PLC0415

    found = contracts.load(args.workspace)
    return found, list(packages.discover(args.workspace, found, args.services))


def _graph(args: argparse.Namespace) -> int:
    from keel.system import consumers, graph  # noqa: PLC0415

    try:
        found, packages = _system(args)
    except (WorkspaceError, BuildError, GenerateError) as error:
        print(f"keel graph: {error}", file=sys.stderr)
        return 1
    section = graph.render(found, packages, consumers.usage(found, packages))
    if args.mermaid is not None:
        changed = graph.write_mermaid(args.mermaid, found, packages)
        print(f"keel graph: {args.mermaid} {'updated' if changed else 'unchanged'}")
    if args.check is not None:
        current = args.check.read_text() if args.check.exists() else ""
        if graph.updated(current, section) != current:
            print(
                f"keel graph: {args.check} is stale: run 'make gen' and commit it", file=sys.stderr
            )
            return 1
        return 0
    if args.write is not None:
        changed = graph.write(args.write, section)
        print(f"keel graph: {args.write} {'updated' if changed else 'unchanged'}")
        return 0
    if args.mermaid is None:
        print(section, end="")
    return 0


def _affected(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from keel.system import affected  # noqa: PLC0415

    try:
        found, packages = _system(args)
        paths = affected.changed_paths(args.workspace, args.since)
    except (WorkspaceError, BuildError, GenerateError, affected.GitError) as error:
        print(f"keel affected: {error}", file=sys.stderr)
        return 1
    touched = affected.affected(paths, found, packages)
    folders = {p.name: p.folder.as_posix() for p in packages}
    if args.json:
        print(
            json.dumps(
                {name: {"folder": folders[name], "why": why} for name, why in touched.items()},
                indent=2,
            )
        )
    elif args.why:
        for name, why in touched.items():
            print(name)
            for reason in why:
                print(f"  {reason}")
    else:
        for name in touched:
            print(folders[name] if args.paths else name)
    return 0


def _new_service(args: argparse.Namespace) -> int:
    from keel.scaffold.service import ScaffoldError, new_service  # noqa: PLC0415

    try:
        created = new_service(
            args.root,
            args.name,
            org=args.org,
            port=args.port,
            services_dir=args.services,
            templates=args.templates,
            proto=args.proto,
        )
    except ScaffoldError as error:
        print(f"keel new service: {error}", file=sys.stderr)
        return 2
    for path in created.written:
        print(f"  wrote   {path}")
    for path in created.changed:
        print(f"  changed {path}")
    print(
        f"keel new service: {', '.join(created.services)} on port {created.port}. "
        "Next: make gen, then make test and make run."
    )
    return 0


def _new_templates(args: argparse.Namespace) -> int:
    from keel.scaffold.service import ScaffoldError, copy_templates  # noqa: PLC0415

    try:
        copied = copy_templates(args.folder, args.files)
    except ScaffoldError as error:
        print(f"keel new templates: {error}", file=sys.stderr)
        return 2
    for path in copied:
        print(f"  wrote   {path}")
    print(
        f"keel new templates: Keel's templates, to edit, in {args.folder}. Use them with "
        f"keel new service NAME --templates {args.folder}, or for every new service with "
        f'[tool.keel.new] templates = "{args.folder}" in pyproject.toml.'
    )
    return 0


def _register_saga(commands: Any) -> None:
    """`keel saga show NAME ID`, `keel saga list NAME`, `keel saga resume NAME ID`."""
    saga = commands.add_parser("saga", help="inspect a service's sagas, resume a FAILED one")
    saga_actions = saga.add_subparsers(dest="action", required=True)
    shown = saga_actions.add_parser("show", help="a saga's recorded state and steps")
    listed = saga_actions.add_parser("list", help="the service's sagas, last updated first")
    listed.add_argument(
        "--status",
        action="append",
        default=[],
        choices=("RUNNING", "FORWARD", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"),
        help="only sagas in this status (repeat for several)",
    )
    listed.add_argument("--limit", type=_positive, default=50, help="at most N sagas (50)")
    resumed = saga_actions.add_parser(
        "resume", help="a FAILED saga driven again by the service's recovery, after a fix"
    )
    for parser in (shown, listed, resumed):
        parser.add_argument("service", metavar="NAME", help="the service's folder (its database)")
        if parser is not listed:
            parser.add_argument("saga_id", metavar="ID")
        parser.add_argument("--json", action="store_true", help="JSON output")
        parser.set_defaults(run=_saga)


def _register_new(commands: Any) -> None:
    """`keel new service NAME`."""
    new = commands.add_parser("new", help="scaffold something new")
    kinds = new.add_subparsers(dest="kind", required=True)
    service = kinds.add_parser("service", help="a service: proto, package, tests, registration")
    service.add_argument("name", help="lower-case letters and digits, e.g. inventory")
    service.add_argument("--org", help="the proto's top package (default: the one in proto/)")
    service.add_argument("--port", type=int, help="its port (default: after the registry's last)")
    service.add_argument("--root", type=Path, default=Path("."), help="the repository's root")
    service.add_argument("--services", default="services", help="services folder (relative)")
    service.add_argument(
        "--templates",
        type=Path,
        metavar="DIR",
        help="a team's templates, replacing Keel's file by file "
        "(default: [tool.keel.new] templates in pyproject.toml, else Keel's)",
    )
    service.add_argument(
        "--proto",
        type=Path,
        metavar="FILE",
        help="serve the services of this proto (written first) instead of a new proto's one",
    )
    service.set_defaults(run=_new_service)
    templates = kinds.add_parser("templates", help="a copy of Keel's templates, to edit")
    templates.add_argument("folder", type=Path, metavar="DIR", help="the team's templates folder")
    templates.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="only these (e.g. service/README.md.tmpl); default: all, into a new or empty DIR",
    )
    templates.set_defaults(run=_new_templates)


def _ingress(args: argparse.Namespace) -> int:
    from keel import genroot  # noqa: PLC0415
    from keel.gateway.ingress import IngressError, Options, http_routes, render  # noqa: PLC0415
    from keel.gateway.routes import RouteTable  # noqa: PLC0415

    if not args.gen.is_dir():
        print(f"keel ingress: {args.gen} does not exist: run `keel gen` first", file=sys.stderr)
        return 2
    try:
        table = RouteTable.from_generated(args.gen)
    except genroot.UnimportableError as error:
        print(f"keel ingress: {error}", file=sys.stderr)
        return 2
    options = Options(
        gateway=args.gateway,
        namespace=args.namespace,
        backend=args.backend,
        port=args.port,
        hostnames=tuple(args.hostname),
        cors=args.cors,
    )
    try:
        routes = http_routes(table, options)
    except IngressError as error:
        print(f"keel ingress: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(render(routes))
    return 0


def _register_ingress(commands: Any) -> None:
    """`keel ingress`."""
    ingress = commands.add_parser(
        "ingress", help="Kubernetes Gateway API HTTPRoutes from the protos' HTTP rules"
    )
    ingress.add_argument("--gen", type=Path, default=Path("gen"), help="generated code")
    ingress.add_argument("--gateway", default="keel", help="the Gateway the routes attach to")
    ingress.add_argument("--namespace", help="the routes' namespace (default: none set)")
    ingress.add_argument(
        "--backend",
        default="{name}",
        help="each proto service's Kubernetes Service: {name} (order-service), {package}",
    )
    ingress.add_argument("--port", type=int, default=8080, help="the services' REST port")
    ingress.add_argument("--hostname", action="append", default=[], help="(repeatable)")
    ingress.add_argument(
        "--cors", action="store_true", help="also route OPTIONS (preflights) to the services"
    )
    ingress.set_defaults(run=_ingress)


def _register_system(commands: Any) -> None:
    """`keel graph` and `keel affected`."""
    graph = commands.add_parser("graph", help="the system's map (Mermaid) from its contracts")
    graph.add_argument("--workspace", type=Path, default=Path("."), help="folder with buf.yaml")
    graph.add_argument("--services", default="services", help="services folder (relative)")
    written = graph.add_mutually_exclusive_group()
    written.add_argument("--write", type=Path, metavar="PAGE", help="update PAGE's generated part")
    written.add_argument("--check", type=Path, metavar="PAGE", help="fail if PAGE is stale")
    graph.add_argument(
        "--mermaid", type=Path, metavar="FILE", help="also write the services diagram's source"
    )
    graph.set_defaults(run=_graph)
    touched = commands.add_parser("affected", help="the services a change touches")
    touched.add_argument(
        "--since", required=True, metavar="REF", help="git revision (main, origin/main)"
    )
    touched.add_argument("--workspace", type=Path, default=Path("."), help="repository root")
    touched.add_argument("--services", default="services", help="services folder (relative)")
    shown_as = touched.add_mutually_exclusive_group()
    shown_as.add_argument("--why", action="store_true", help="each service with its reasons")
    shown_as.add_argument("--json", action="store_true", help="one JSON object")
    shown_as.add_argument("--paths", action="store_true", help="service folders, not names")
    touched.set_defaults(run=_affected)


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
    brk.add_argument("--services", default="services", help="consumers: services folder (relative)")
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
    dev.add_argument(
        "--gateway-port", type=int, default=8080, help="REST gateway port (0: no gateway)"
    )
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".keel/state"),
        help="each service's state (its SQLite database) goes in DIR/<name>",
    )
    dev.add_argument(
        "--watch",
        action="store_true",
        help="a saved .proto regenerates and restarts the services it touches; a saved service "
        "file restarts that service (run from the workspace's root)",
    )
    dev.set_defaults(run=_dev)

    db = commands.add_parser("db", help="a service's database migrations (Alembic)")
    actions = db.add_subparsers(dest="action", required=True)
    for action, helped in (
        ("upgrade", "apply migrations up to REVISION (default head)"),
        ("downgrade", "undo migrations down to REVISION (base: all)"),
        ("revision", "write a migration from the difference between models and database"),
        ("check", "fail, naming each difference, when models and migrations disagree"),
    ):
        each = actions.add_parser(action, help=helped)
        each.add_argument("name", help="the service: its folder name under --services")
        each.add_argument("--services", type=Path, default=Path("services"), help="services folder")
        if action == "upgrade":
            each.add_argument("revision", nargs="?", default="head")
        elif action == "downgrade":
            each.add_argument("revision")
        elif action == "revision":
            each.add_argument("-m", "--message", required=True, help="what the migration does")
        each.set_defaults(run=_db)

    events_commands.register(commands)
    mock_commands.register(commands)
    _register_saga(commands)
    _register_system(commands)
    _register_ingress(commands)
    _register_new(commands)
    gateway = commands.add_parser("gateway", help="serve the REST gateway")
    gateway.add_argument("--gen", type=Path, default=Path("gen"), help="generated code")
    gateway.add_argument(
        "--target", action="append", default=[], help="SERVICE=HOST:PORT (full service name)"
    )
    gateway.add_argument("--default-target", help="HOST:PORT for services without --target")
    gateway.add_argument(
        "--rest-target",
        action="append",
        default=[],
        help="SERVICE=HOST:PORT: the service's own REST port, to pass its requests through to",
    )
    gateway.add_argument(
        "--upstream",
        choices=("auto", "grpc", "rest"),
        help="auto: pass through to a service's REST port when known, else gRPC; grpc; rest"
        " (default: KEEL_GATEWAY_UPSTREAM, else auto)",
    )
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.add_argument(
        "--workers",
        type=_positive,
        help="processes sharing the port, one event loop each (default: KEEL_WORKERS, else 1)",
    )
    gateway.add_argument(
        "--middleware",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="ASGI middleware around the gateway (repeatable; the first is outermost)",
    )
    gateway.set_defaults(run=_gateway)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `keel` console script."""
    args = parser().parse_args(argv)
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
