"""The Python files of a service package made from a proto (keel.scaffold.contract): one thin
class per proto service, the process that serves them all, and tests that each is served."""

from __future__ import annotations

import textwrap

from keel.scaffold.contract import Contract, Rpc, Service


def _docstring(text: str, indent: str) -> str:
    lines = [line.strip() for line in text.splitlines()] or [""]
    body = "\n".join(textwrap.fill(line, 94 - len(indent)) if line else "" for line in lines)
    body = textwrap.indent(body, indent).strip()
    return f'{indent}"""{body}"""\n' if "\n" not in body else f'{indent}"""{body}\n{indent}"""\n'


def _import(module: str, alias: str) -> str:
    parent, _, last = module.rpartition(".")
    return f"from {parent} import {last}" + ("" if alias == last else f" as {alias}")


def _keel_alias(service: Service) -> str:
    return service.module.rsplit(".", 1)[1]


def _method(service: Service, rpc: Rpc) -> str:
    request = f"AsyncIterator[{rpc.request}]" if rpc.client_streaming else rpc.request
    response = f"AsyncIterator[{rpc.response}]" if rpc.server_streaming else rpc.response
    param = "requests" if rpc.client_streaming else "request"
    comment = rpc.comment or f"{rpc.name}."
    unwritten = f"{service.full_name}.{rpc.name}: not written yet"
    return (
        f"    async def {rpc.python}(\n"
        f"        self, {param}: {request}, context: keel.Context\n"
        f"    ) -> {response}:\n"
        + _docstring(comment, "        ")
        + f'        raise keel.errors.Unimplemented("{unwritten}")\n'
        + (
            f"        yield {rpc.response}()  # (a stream: yield each response)\n"
            if rpc.server_streaming
            else ""
        )
    )


def service_module(contract: Contract, name: str, pascal: str) -> str:
    """`<name>/service.py`: a thin class per proto service, each on the database and settings."""
    streaming = any(
        r.client_streaming or r.server_streaming for s in contract.services for r in s.rpcs
    )
    keel_modules = sorted({_keel_alias(s) for s in contract.services})
    package = contract.services[0].module.rsplit(".", 1)[0]
    served = ", ".join(s.full_name for s in contract.services)
    lines = [
        _docstring(
            f"{served} over {name}'s domain: proto in, proto out. Each method keeps the "
            "generated signature and answers UNIMPLEMENTED until it is written; keep the rules "
            "in a domain module that knows nothing of gRPC.",
            "",
        ),
        "from __future__ import annotations",
        "",
    ]
    if streaming:
        lines += ["from collections.abc import AsyncIterator", ""]
    lines += ["import keel", "from keel.data import Database", ""]
    lines += [f"from {package} import {', '.join(keel_modules)}"]
    lines += [_import(module, alias) for module, alias in contract.imports]
    lines += [f"from {name}.settings import {pascal}Settings", "", ""]
    text = "\n".join(lines)
    for service in contract.services:
        text += (
            f"class {service.name}({_keel_alias(service)}.{service.name}Base):\n"
            + _docstring(
                f"{service.full_name} on `db`, with `settings` (default: from the environment).",
                "    ",
            )
            + "\n"
            "    def __init__(\n"
            f"        self, db: Database, settings: {pascal}Settings | None = None\n"
            "    ) -> None:\n"
            "        self.db = db\n"
            f"        self.settings = settings or {pascal}Settings()\n"
        )
        for rpc in service.rpcs:
            text += "\n" + _method(service, rpc)
        text += "\n\n"
    return text.rstrip() + "\n"


def main_module(contract: Contract, name: str, pascal: str) -> str:
    """`<name>/__main__.py`: serve every service of the proto from one process."""
    classes = ", ".join(s.name for s in contract.services)
    made = ", ".join(f"{s.name}(db, settings)" for s in contract.services)
    served = ", ".join(s.full_name for s in contract.services)
    return (
        _docstring(
            f"`python -m {name}`: serve {served} on {name}'s database (KEEL_DATABASE_URL, else "
            "SQLite in its state folder), migrated at start-up when KEEL_MIGRATE=true, with its "
            f"own settings from {name.upper()}_*.",
            "",
        )
        + "\n"
        "import keel\n"
        "from keel.data import prepare\n\n"
        f"from {name}.service import {classes}\n"
        f"from {name}.settings import {pascal}Settings\n\n\n"
        "def main() -> None:\n"
        f"    settings = {pascal}Settings()  # an invalid {name.upper()}_* value stops start-up\n"
        f'    db = prepare("{name}")\n'
        f"    keel.serve([{made}])\n\n\n"
        'if __name__ == "__main__":\n'
        "    main()\n"
    )


_METHOD_TESTS = '''
@pytest.mark.parametrize(
    ("client_type", "method", "request_type", "kind"),
    [
{cases}
    ],
)
async def test_a_method_not_written_yet_answers_unimplemented(
    keel_client: Callable[[type[Any]], Any],
    client_type: type[Any],
    method: str,
    request_type: type[Any],
    kind: str,
) -> None:
    call = getattr(keel_client(client_type), method)
    with pytest.raises(keel.errors.Unimplemented):
        await _answer(call, request_type(), kind)


async def _answer(call: Any, request: Any, kind: str) -> list[Any]:
    """What a call answers: its response, or every message of its stream (a client stream
    sends `request` once)."""
    if kind == "unary":
        return [await call(request)]
    if kind == "stream":
        return [response async for response in call(request)]
    if kind == "client":
        return [await call(_once(request))]
    return [response async for response in call(_once(request))]


async def _once(request: Any) -> AsyncIterator[Any]:
    yield request
'''


_KINDS = {
    (False, False): "unary",
    (False, True): "stream",
    (True, False): "client",
    (True, True): "bidi",
}


def test_module(contract: Contract, name: str) -> str:
    """`tests/test_<name>_service.py`: every service is served and healthy, and every method
    answers (UNIMPLEMENTED until written: replace those cases with real ones as you go)."""
    package = contract.services[0].module.rsplit(".", 1)[0]
    keel_modules = sorted({_keel_alias(s) for s in contract.services})
    classes = ", ".join(s.name for s in contract.services)
    cases = []
    for service in contract.services:
        for rpc in service.rpcs:
            kind = _KINDS[rpc.client_streaming, rpc.server_streaming]
            client = f"{_keel_alias(service)}.{service.name}Client"
            cases.append(f'        ({client}, "{rpc.python}", {rpc.request}, "{kind}"),')
    used = {rpc.request.split(".", 1)[0] for s in contract.services for rpc in s.rpcs}
    imports = "\n".join(
        _import(module, alias) for module, alias in contract.imports if alias in used
    )
    names = "".join(f'    "{s.full_name}",\n' for s in contract.services)
    methods = _METHOD_TESTS.replace("{cases}", "\n".join(cases)) if cases else ""
    text = f'''"""{name} served as its tests see it: a real server on its own database (SQLite, then
PostgreSQL: the keel_database fixture), called through the generated clients. Replace the
UNIMPLEMENTED cases with the behaviour of each method as you write it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import keel
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from keel.data import Database
from {package} import {", ".join(keel_modules)}
{imports}
from {name}.service import {classes}

SERVICES = (
{names})


@pytest.fixture
def keel_services(keel_database: Database) -> Sequence[keel.ServiceBase]:
    return [{", ".join(f"{s.name}(keel_database)" for s in contract.services)}]


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_is_serving(keel_addr: Callable[[str], str], service: str) -> None:
    async with grpc.aio.insecure_channel(keel_addr(service)) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # (typed for sync channels)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


{methods}'''
    return text if cases else text.replace("AsyncIterator, Callable", "Callable")
