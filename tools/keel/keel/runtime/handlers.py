"""Turning service implementations into grpc.aio method handlers.

Every call gets a keel.Context (correlation id, verified caller: with a CallerCheck, a call
whose identity does not verify ends UNAUTHENTICATED before the method runs); `keel.errors` become
statuses with google.rpc details (an error a Keel client raised, re-raised or not caught, sends
its own status and details on); an unexpected exception becomes INTERNAL with the correlation
id (the traceback goes to the log, never to the caller); request bytes that do not decode
become INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import Any

import grpc
import grpc.aio
from grpc_status import rpc_status

from keel.errors import InvalidArgument, KeelError
from keel.runtime import correlation, propagation, tally, tracing, validation
from keel.runtime.context import Context
from keel.runtime.identity import CallerCheck, policy
from keel.runtime.logs import get_logger
from keel.runtime.observe import MethodObserver, Observation, status_code
from keel.runtime.service import ServiceBase
from keel.runtime.spec import MethodSpec, RpcKind

Behaviour = Callable[..., Any]
GrpcContext = grpc.aio.ServicerContext[Any, Any]
PUSHBACK = "grpc-retry-pushback-ms"
_QUIET = Observation(log_calls=False, metrics=None)
_log = get_logger("keel.server")


class Undecodable:
    """What the deserializer hands on for request bytes that are not a valid message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _deserializer(spec: MethodSpec[Any, Any]) -> Callable[[bytes], Any]:
    parse = spec.request_type.FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:
            return Undecodable(f"{error}")

    return deserialize


def _undecodable_error(spec: MethodSpec[Any, Any], request: Undecodable) -> KeelError:
    name = spec.request_type.DESCRIPTOR.full_name
    return InvalidArgument(
        f"request is not a valid {name} message: {request.reason}",
        reason="UNDECODABLE_REQUEST",
        domain="keel",
    )


async def _end_call(context: GrpcContext, spec: MethodSpec[Any, Any], error: Exception) -> None:
    """Abort the call for `error` (never returns)."""
    if isinstance(error, KeelError):
        status = rpc_status.to_status(error.to_status())
        trailers = tuple(status.trailing_metadata) + _pushback(error)
        await context.abort(status.code, status.details, trailers)
    _log.error(
        "unhandled exception in handler",
        method=spec.path,
        exc_info=error,
    )
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error (correlation id {correlation.current()})",
    )


def _pushback(error: KeelError) -> tuple[tuple[str, str], ...]:
    """gRPC's retry pushback: RetryInfo's delay, or "do not retry" for RESOURCE_EXHAUSTED."""
    if error.retry_after is not None:
        return ((PUSHBACK, str(max(0, round(error.retry_after * 1000)))),)
    if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ((PUSHBACK, "-1"),)
    return ()


Check = Callable[[Any], None]


def _checker(spec: MethodSpec[Any, Any], validate: bool) -> Check | None:
    """Validation for this method's requests, or None if off or its message has no rules."""
    if validate and validation.has_rules(spec.request_type.DESCRIPTOR):
        return validation.check
    return None


async def _checked(
    spec: MethodSpec[Any, Any],
    requests: AsyncIterator[Any],
    observer: MethodObserver,
    check: Check | None,
) -> AsyncIterator[Any]:
    async for request in requests:
        observer.received()
        if type(request) is Undecodable:
            raise _undecodable_error(spec, request)
        if check is not None:
            check(request)
        yield request


def _preparer(
    spec: MethodSpec[Any, Any], observer: MethodObserver, validate: bool
) -> Callable[[Any], Any]:
    """request → what the method gets: a checked stream, or a decoded, valid message."""
    check = _checker(spec, validate)
    if spec.kind.client_streaming:
        return lambda requests: _checked(spec, requests, observer, check)

    counts = observer.counts

    def prepare(request: Any) -> Any:
        if counts is not None:  # (observer.received(), without a call)
            counts[tally.RECEIVED] += 1
        if type(request) is Undecodable:
            raise _undecodable_error(spec, request)
        if check is not None:
            check(request)
        return request

    return prepare


def _start_span(observer: MethodObserver, path: str, call: Context) -> tracing.ServerSpan | None:
    if observer.tracer is None:
        return None
    return tracing.start_server_span(observer.tracer, path, call.metadata)


def _failure_code(error: BaseException, context: GrpcContext) -> grpc.StatusCode:
    """The status a call that raised `error` ends with."""
    if isinstance(error, KeelError):
        return error.code()
    if isinstance(error, grpc.aio.AbortError):
        return status_code(context.code())
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


async def _end_if_unhandled(
    context: GrpcContext, spec: MethodSpec[Any, Any], error: BaseException
) -> None:
    """End the call with a status for an exception grpc would otherwise answer UNKNOWN."""
    if isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
        await _end_call(context, spec, error)


def _record(
    observer: MethodObserver,
    span: tracing.ServerSpan | None,
    began: float,
    code: grpc.StatusCode,
    context: GrpcContext,
    *,
    call: Context | None = None,
) -> None:
    """Log, count and trace one finished call."""
    if code is grpc.StatusCode.OK:  # a handler may set a status and still return
        raw = context.code()
        if raw is not None:
            code = status_code(raw)
    if span is not None:
        tracing.end_server_span(span, code)
    observer.finished(began, code, context, call=call)


def _unary_response(
    spec: MethodSpec[Any, Any],
    method: Behaviour,
    observer: MethodObserver,
    validate: bool,
    caller: CallerCheck | None,
) -> Behaviour:
    prepare = _preparer(spec, observer, validate)
    service = spec.service

    async def quiet(request: Any, context: GrpcContext) -> Any:
        call = propagation.bind(service, context)
        try:
            if caller is not None:
                caller.admit(call)
            return await method(prepare(request), call)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _end_call(context, spec, error)

    tracer, path, counts = observer.tracer, spec.path, observer.counts
    check, log_calls = _checker(spec, validate), observer.log_calls
    streamed = prepare if spec.kind.client_streaming else None
    ok = grpc.StatusCode.OK

    async def observed(request: Any, context: GrpcContext) -> Any:
        call = propagation.bind(service, context)
        # (observer.started(), .received(), .sent(), prepare() and, on success, _record(),
        # inlined: a call each saved)
        if counts is not None:
            counts[tally.STARTED] += 1
        began = perf_counter()
        span = None if tracer is None else tracing.start_server_span(tracer, path, call.metadata)
        try:
            if caller is not None:
                caller.admit(call)
            if streamed is not None:  # a stream of requests, counted and checked as they come
                request = streamed(request)
            else:
                if counts is not None:
                    counts[tally.RECEIVED] += 1
                if type(request) is Undecodable:
                    raise _undecodable_error(spec, request)
                if check is not None:
                    check(request)
            response = await method(request, call)
        except BaseException as error:
            # Recorded before the status goes out, so the line exists once the caller has it.
            _record(observer, span, began, _failure_code(error, context), context, call=call)
            await _end_if_unhandled(context, spec, error)
            raise
        raw = context.code()  # a handler may set a status and still return
        code = ok if raw is None else status_code(raw)
        if span is not None:
            tracing.end_server_span(span, code)
        if counts is not None:
            counts[tally.SENT] += 1
        if log_calls:
            observer.finished(began, code, context, call=call)
        elif counts is not None:
            tally.finish(counts, code, perf_counter() - began)
        return response

    return observed if observer.active else quiet


def _stream_response(
    spec: MethodSpec[Any, Any],
    method: Behaviour,
    observer: MethodObserver,
    validate: bool,
    caller: CallerCheck | None,
) -> Behaviour:
    prepare = _preparer(spec, observer, validate)
    service = spec.service

    async def behaviour(request: Any, context: GrpcContext) -> AsyncIterator[Any]:
        call = propagation.bind(service, context)
        began = observer.started()
        span = _start_span(observer, spec.path, call)
        try:
            if caller is not None:
                caller.admit(call)
            async for response in method(prepare(request), call):
                observer.sent()
                yield response
        except BaseException as error:
            if observer.active:  # (a span is only made when it is)
                _record(observer, span, began, _failure_code(error, context), context, call=call)
            await _end_if_unhandled(context, spec, error)
            raise
        if observer.active:
            _record(observer, span, began, grpc.StatusCode.OK, context, call=call)

    return behaviour


_FACTORIES: dict[RpcKind, tuple[Callable[..., grpc.RpcMethodHandler[Any, Any]], Any]] = {
    RpcKind.UNARY_UNARY: (grpc.unary_unary_rpc_method_handler, _unary_response),
    RpcKind.UNARY_STREAM: (grpc.unary_stream_rpc_method_handler, _stream_response),
    RpcKind.STREAM_UNARY: (grpc.stream_unary_rpc_method_handler, _unary_response),
    RpcKind.STREAM_STREAM: (grpc.stream_stream_rpc_method_handler, _stream_response),
}


def _handler(
    impl: ServiceBase,
    spec: MethodSpec[Any, Any],
    observation: Observation,
    validate: bool,
    caller: CallerCheck | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    make_handler, wrap = _FACTORIES[spec.kind]
    observer = observation.for_method(spec)
    if caller is not None:
        caller = caller.for_policy(policy(spec, type(impl).__keel_service__))
    return make_handler(
        wrap(spec, getattr(impl, spec.python_name), observer, validate, caller),
        request_deserializer=_deserializer(spec),
        response_serializer=spec.response_type.SerializeToString,
    )


def method_handlers(
    impl: ServiceBase,
    observation: Observation = _QUIET,
    *,
    validate: bool = True,
    caller: CallerCheck | None = None,
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The grpc method handlers of one implementation, keyed by method name; with `caller`,
    every call's identity is verified first, and each method's proto auth policy applied
    (keel.runtime.identity)."""
    spec = type(impl).__keel_service__
    return {m.name: _handler(impl, m, observation, validate, caller) for m in spec.methods}


def add_to_server(
    impl: ServiceBase,
    server: grpc.aio.Server,
    observation: Observation = _QUIET,
    *,
    validate: bool = True,
    caller: CallerCheck | None = None,
) -> None:
    """Serve `impl` (an instance of a generated `<Service>Base` subclass) on a grpc.aio server.

    Requests are validated against their `buf.validate` rules unless `validate=False`.
    `keel.Server` passes an Observation that logs and measures every call; by default nothing is.
    With `caller` (keel.Server makes one when keys are configured), each call's identity is
    verified before the method runs. The methods are added as a generic handler, not registered
    one by one: grpc.aio's cost per accepted call grows with its registered methods
    (keel.runtime.dispatch).
    """
    spec = type(impl).__keel_service__
    handlers = method_handlers(impl, observation, validate=validate, caller=caller)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(spec.name, handlers),))
