"""`keel mock [--port P] [--gen gen] [--seed N] [--stubs PATH]... SERVICE...`: serve mocks of
services (full proto names) from their generated code alone, until SIGTERM or Ctrl-C.

`register` only adds the parser: gRPC and the generated code load when the command runs.

keel mock acme.payments.v1.PaymentService                       # valid fake data, seed 0
keel mock --port 50052 --seed 7 --stubs stubs/payments.yaml acme.payments.v1.PaymentService
keel mock --admin-port 8081 acme.catalog.v1.CatalogService      # GET /calls, POST /stubs, ...
keel mock --record 127.0.0.1:50051 --stubs-out recorded.yaml acme.catalog.v1.CatalogService
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add `mock` to the `keel` command's subparsers."""
    mock = commands.add_parser("mock", help="serve mocks of services from their protos")
    add_arguments(mock)
    mock.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("services", nargs="+", metavar="SERVICE", help="full service names")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--gen", type=Path, default=Path("gen"), help="generated code")
    parser.add_argument("--seed", type=int, default=0, help="the generated data's seed")
    parser.add_argument(
        "--stubs", type=Path, action="append", default=[], metavar="PATH", help="stub file"
    )
    parser.add_argument(
        "--admin-port", type=int, metavar="PORT", help="admin HTTP API port (0: a free one)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="Prometheus /metrics port (0: off)"
    )
    parser.add_argument("--record", metavar="TARGET", help="proxy to HOST:PORT, recording stubs")
    parser.add_argument("--stubs-out", type=Path, metavar="FILE", help="where --record writes")


def run(args: argparse.Namespace) -> int:
    """The command; exit status 0, 2 for bad arguments, stubs or settings."""
    from keel import genroot  # noqa: PLC0415
    from keel.mock import discovery, stubs  # noqa: PLC0415
    from keel.runtime import config, logs  # noqa: PLC0415
    from keel.runtime.server import run as run_loop  # noqa: PLC0415

    if bool(args.record) != bool(args.stubs_out):
        print("keel mock: --record TARGET and --stubs-out FILE go together", file=sys.stderr)
        return 2
    try:
        settings = config.current()
    except config.ConfigError as error:
        print(f"keel mock: configuration error: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, console=settings.console_logs)
    try:
        return run_loop(_serve(args, settings))
    except (
        discovery.UnknownServiceError,
        stubs.StubError,
        genroot.UnimportableError,
        OSError,
    ) as error:
        print(f"keel mock: {error}", file=sys.stderr)
        return 2


async def _serve(args: argparse.Namespace, settings: Any) -> int:
    from keel.mock import events, record  # noqa: PLC0415
    from keel.mock.server import MockServer  # noqa: PLC0415
    from keel.runtime import listen, logs  # noqa: PLC0415

    log = logs.get_logger("keel.mock")
    publisher = events.Emitter(args.gen, settings) if settings.nats_url else None
    recorder = record.Recorder(args.record, args.stubs_out) if args.record else None
    mock = MockServer(
        args.services,
        gen=args.gen,
        port=args.port,
        host=args.host,
        seed=args.seed,
        stub_files=args.stubs,
        admin_port=args.admin_port,
        log_calls=settings.log_calls,
        metrics=args.metrics_port != 0,
        publish=publisher.publish if publisher is not None else None,
    )
    if recorder is not None:
        recorder.attach(mock)
    if args.metrics_port:
        listen.serve_metrics(args.host, args.metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with mock:
        log.info(
            "serving",
            services=list(args.services),
            port=mock.port,
            admin_port=mock.admin_port,
            seed=args.seed,
            stubs=len(mock.state.stubs),
            recording=args.record,
        )
        await stopping.wait()
        log.info("stopping")
    if recorder is not None:
        await recorder.close()
    if publisher is not None:
        await publisher.close()
    return 0
