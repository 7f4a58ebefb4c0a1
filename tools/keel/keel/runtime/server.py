"""`keel.Server` and `keel.serve`: a grpc.aio server with health, reflection and graceful drain."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, cast

import grpc.aio
import uvloop
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from keel.runtime import config, cycles, fastpaths, intercepted, logs, tracing
from keel.runtime.config import ConfigError, Settings
from keel.runtime.dispatch import MethodTable
from keel.runtime.handlers import Behaviour, method_handlers
from keel.runtime.identity import CallerCheck
from keel.runtime.listen import ListenError, check_free, serve_metrics
from keel.runtime.metrics import default_metrics
from keel.runtime.observe import Observation
from keel.runtime.service import ServiceBase

_log = logs.get_logger("keel.server")
T = TypeVar("T")


class Background(Protocol):
    """A task that runs with a server (an event relay, consumers): started before the server
    serves, stopped after it drained, in reverse order."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Server:
    """A gRPC server for service implementations (instances of generated `<Service>Base`s).

    Every server answers `grpc.health.v1.Health` (per service, and "" for the whole server) and
    server reflection. `stop()` turns health NOT_SERVING, refuses new calls and lets in-flight
    calls finish within the grace period; then each service's optional
    `async def __keel_close__(self)` runs (close clients, flush buffers).

    `interceptors` (grpc.aio server interceptors) see every call the server answers, health
    and reflection included, in order, before Keel's own handling of the call. `background`
    objects (`async start()`/`stop()`, e.g. keel.events' Relay and Consumers) start before the
    server serves and stop, last first, after its calls drained. `keys`: the settings whose
    KEEL_JWT_SECRET or JWKS verify each call's bearer token (keel.runtime.identity); by default
    the process's settings; without keys, callers are not verified (development).

    `rest_port` (None: off; 0: a free port) serves the services' `google.api.http` routes over
    HTTP on the same event loop, each request calling the same implementation directly (no gRPC
    hop), with the gateway's transcoding, errors, auth policy, rate limits, CORS, OpenAPI and
    docs (keel.gateway.inservice); REST settings (KEEL_CORS_ORIGINS, KEEL_RATE_LIMIT, ...) come
    from `keys`, else the process's settings; `rest_middleware` wraps them in ASGI middleware.

        async with keel.Server([Orders()], port=0, rest_port=0) as server:
            print(server.port, server.rest_port)
    """

    def __init__(
        self,
        services: Sequence[ServiceBase],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        grace_period: float = 30.0,
        log_calls: bool = True,
        metrics: bool = True,
        validate: bool = True,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        background: Sequence[Background] = (),
        keys: Settings | None = None,
        rest_port: int | None = None,
        rest_middleware: Sequence[Any] = (),
    ) -> None:
        names = [type(s).__keel_service__.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"each service may be served once: {names}")
        self.services = tuple(services)
        self.names = tuple(names)
        self.grace_period = grace_period
        self.validate = validate
        self.observation = Observation(
            log_calls=log_calls, metrics=default_metrics() if metrics else None
        )
        self.interceptors = tuple(interceptors)
        self.background = tuple(background)
        self.settings = config.current() if keys is None else keys
        self.caller_check = CallerCheck.from_settings(self.settings)
        """How each call's identity is verified; None without keys (nothing is verified)."""
        self.reuse_port = False
        """Whether the ports may be shared with other processes (SO_REUSEPORT: workers); else
        a port another process listens on is an error (ListenError), not shared."""
        self._rest_port = rest_port
        self.rest_middleware = tuple(rest_middleware)
        """ASGI middleware around the REST routes, the first outermost (as the gateway's)."""
        self._rest: Any = None  # keel.gateway.listener.Listener, once serving
        self._serving = False
        self._started: list[Background] = []
        self._address = f"{host}:{port}"
        self._server: grpc.aio.Server | None = None
        self._health = grpc_health.aio.HealthServicer()
        self._port = 0

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        return self._port

    @property
    def rest_port(self) -> int | None:
        """The port of the REST routes (known once started; None when REST is off)."""
        return self._rest.port if self._rest is not None else self._rest_port

    async def start(self) -> None:
        """Start the background tasks, bind and start serving; health turns SERVING."""
        try:
            for task in self.background:
                await task.start()
                self._started.append(task)
        except BaseException:
            await self._stop_background()
            raise
        try:
            self._server = await self._start_grpc()
        except BaseException:
            await self._stop_background()
            raise
        if self._rest_port is not None:
            try:
                await self._start_rest(self._rest_port)
            except BaseException:
                await self.stop(0)
                raise
        for name in ("", *self.names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._serving = True

    async def _start_grpc(self) -> grpc.aio.Server:
        """Bind the gRPC port and start serving on it."""
        cycles.apply()  # each call it accepts leaves nothing for the garbage collector
        fastpaths.apply()  # and costs grpc.aio's accept loop less
        server = grpc.aio.server(
            interceptors=self.interceptors or None,
            # grpc shares ports by default: a second server on a port in use would take part of
            # the first one's calls (a mock, a second `keel dev`) instead of failing.
            options=[("grpc.so_reuseport", int(self.reuse_port))],
        )
        server.add_generic_rpc_handlers((self._method_table(),))
        try:
            self._port = server.add_insecure_port(self._address)
        except RuntimeError as error:  # grpc's "Failed to bind to address ..."
            raise ListenError(self._address, "gRPC", error) from None
        if self._port == 0:
            raise ListenError(self._address, "gRPC")
        await server.start()
        return server

    def _method_table(self) -> MethodTable:
        """Every method the server answers: the services', health and reflection."""
        # (grpc interceptors could change the metadata the lookup is told: then it is read anew)
        table = MethodTable(keep_metadata=not self.interceptors)
        for service in self.services:
            handlers = method_handlers(
                service, self.observation, validate=self.validate, caller=self.caller_check
            )
            table.add_registered_method_handlers(type(service).__keel_service__.name, handlers)
        registrar = cast("grpc.aio.Server", table)  # (it takes handlers as a server does)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, registrar)
        served = (
            *self.names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
            reflection.aio.ReflectionServicer(served), registrar
        )
        return table

    def rest_behaviours(self) -> dict[str, Behaviour]:
        """The behaviour of each method (by gRPC path) for calls made from REST requests in
        this process: built as the gRPC server's (verified caller, validation, errors, metrics,
        spans; the server's interceptors), with the request's own log line in place of the
        call's."""
        observation = Observation(log_calls=False, metrics=self.observation.metrics)
        found: dict[str, Behaviour] = {}
        for service in self.services:
            spec = type(service).__keel_service__
            handlers = method_handlers(
                service, observation, validate=self.validate, caller=self.caller_check
            )
            for method in spec.methods:
                handler = handlers[method.name]
                behaviour = handler.unary_unary or handler.unary_stream
                if behaviour is None:  # (client streaming has no REST call)
                    continue
                if self.interceptors:  # they see every call the server answers, REST too
                    wrap = intercepted.unary if handler.unary_unary else intercepted.streaming
                    behaviour = wrap(self.interceptors, handler, method.path)
                found[method.path] = behaviour
        return found

    async def _start_rest(self, port: int) -> None:
        from keel.gateway.inservice import ServiceRest, service_routes  # noqa: PLC0415
        from keel.gateway.listener import Listener  # noqa: PLC0415

        async def not_serving() -> list[str]:
            return [] if self._serving else list(self.names)

        settings = replace(self.settings, log_calls=self.observation.log_calls)
        app = ServiceRest(
            service_routes(self.services),
            self.rest_behaviours(),
            not_serving,
            settings=settings,
            middleware=self.rest_middleware,
            metrics=self.observation.metrics is not None,
        )
        host = self._address.rpartition(":")[0]
        listener = Listener(app, host, port, reuse_port=self.reuse_port)
        try:
            await listener.start()
        except OSError as error:
            raise ListenError(f"{host}:{port}", "REST (KEEL_REST_PORT)", error) from None
        self._rest = listener

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, refuse new calls, give in-flight calls `grace` seconds."""
        self._serving = False
        rest, self._rest = self._rest, None
        if self._server is not None:
            period = self.grace_period if grace is None else grace
            await self._health.enter_graceful_shutdown()
            draining = [self._server.stop(period)]
            if rest is not None:
                draining.append(rest.stop(period))
            await asyncio.gather(*draining)
            self._server = None
            # Background work (relays, consumers, saga recovery) may still use the services'
            # clients and databases: it stops before the services close them.
            await self._stop_background()
            for service in self.services:
                close = getattr(service, "__keel_close__", None)
                if close is not None:
                    await close()
        await self._stop_background()

    async def _stop_background(self) -> None:
        """Stop each started task, last first: each gets the grace period for its work, as long
        again and a second to clean up; one that fails or takes longer is logged and the others
        are stopped all the same."""
        while self._started:
            task = self._started.pop()
            try:
                await asyncio.wait_for(task.stop(), 2 * self.grace_period + 1)
            except Exception as error:  # TimeoutError included
                _log.error("background task did not stop", task=repr(task), error=repr(error))
            except BaseException:
                await self._stop_background()  # cancelled: the others still stop
                raise

    async def wait(self) -> None:
        """Until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _serve(
    services: Sequence[ServiceBase],
    port: int,
    settings: Settings,
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    *,
    metrics_http: bool = True,
    background: Sequence[Background] = (),
    rest_middleware: Sequence[Any] = (),
) -> None:
    server = Server(
        services,
        port=port,
        host=settings.host,
        grace_period=settings.grace_period,
        log_calls=settings.log_calls,
        metrics=settings.metrics_port != 0,
        interceptors=interceptors,
        background=background,
        keys=settings,
        rest_port=settings.rest_port,
        rest_middleware=rest_middleware,
    )
    server.reuse_port = settings.workers > 1
    if settings.otlp_endpoint:
        tracing.configure(
            settings.otlp_endpoint,
            server.names[0] if server.names else "keel",
            settings.trace_sample_ratio,
            settings.trace_rate_limit,
        )
    if settings.metrics_port and metrics_http:
        serve_metrics(settings.host, settings.metrics_port)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    _log.info(
        "serving",
        services=list(server.names),
        port=server.port,
        host=settings.host,
        metrics_port=settings.metrics_port,
        rest_port=server.rest_port,
    )
    if server.caller_check is None:
        _log.warning(
            "callers are not verified: no KEEL_JWT_SECRET, KEEL_JWKS_FILE or KEEL_JWKS_URL "
            "(development only: keel.Context.subject is whatever the caller sends, unverified)"
        )
    await stopping.wait()
    _log.info("draining", grace_period=settings.grace_period)
    await server.stop()
    tracing.shutdown()
    _log.info("stopped")


def serve(
    services: Sequence[ServiceBase],
    *,
    port: int | None = None,
    workers: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    background: Sequence[Background] = (),
    rest_middleware: Sequence[Any] = (),
) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and return (exit status 0).

    The port is `port`, else `KEEL_PORT`, else 50051; `workers` (else `KEEL_WORKERS`, else 1)
    server processes share it (see keel.runtime.workers), and `KEEL_REST_PORT` too when set.
    `interceptors`, `background` and `rest_middleware` as for `Server` (each worker starts its
    own background tasks).
    Other settings come from `KEEL_*` variables (see keel.runtime.config). A bad setting exits
    with status 2 and a message.
    """
    try:
        settings = Settings.from_env()
        if workers is not None:
            settings = replace(settings, workers=workers)
        chosen_port = settings.port if port is None else port
        if settings.workers > 1 and chosen_port == 0:
            raise ConfigError("KEEL_WORKERS > 1 needs a fixed port (KEEL_PORT), not 0")
        if settings.workers > 1 and settings.rest_port == 0:
            raise ConfigError("KEEL_WORKERS > 1 needs a fixed KEEL_REST_PORT, not 0")
    except ConfigError as error:
        print(f"keel: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_level, console=settings.console_logs)

    def serving(metrics_http: bool) -> Coroutine[Any, Any, None]:
        return _serve(
            services,
            chosen_port,
            settings,
            interceptors,
            metrics_http=metrics_http,
            background=background,
            rest_middleware=rest_middleware,
        )

    try:
        if settings.workers > 1:  # (the supervisor serves the workers' metrics, merged)
            _serve_workers(settings, chosen_port, lambda: run(serving(False)))
        run(serving(True))
    except ListenError as error:
        print(f"keel: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _serve_workers(settings: Settings, port: int, worker: Callable[[], None]) -> None:
    """`worker` in `settings.workers` processes sharing the ports, once they are known to be
    free; exits with their status."""
    from keel.runtime import workers as worker_pool  # noqa: PLC0415

    check_free(settings.host, port, "gRPC")
    if settings.rest_port:
        check_free(settings.host, settings.rest_port, "REST (KEEL_REST_PORT)")
    raise SystemExit(worker_pool.run(worker, settings))


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new uvloop event loop, as `keel.serve` runs servers.

    grpc.aio works on any asyncio loop; on uvloop the same server answers 11-28% more calls
    here (bench/server_bench.py shows both).
    """
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
