"""`MockServer`: mocks of services served by a `keel.Server` (health, reflection, logs,
metrics), with an optional admin HTTP port and the same controls in Python."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from keel.mock import discovery, stubs
from keel.mock.admin import Admin, Publish
from keel.mock.service import implementation
from keel.mock.state import Call, MockState
from keel.runtime.server import Server


class MockServer:
    """Mocks of the services named (full proto names) from the generated code under `gen`.

    `seed` fixes the generated data; `stub_files` (YAML or JSON) are loaded first;
    `admin_port` (None: off, 0: a free port) serves the admin HTTP API (keel.mock.admin).

        async with MockServer(["acme.payments.v1.PaymentService"], seed=7) as mock:
            mock.stub("GetPayment", respond={"payment": {"paymentId": "p1"}})
            client = PaymentServiceClient(mock.address)
            ...
            assert mock.calls("GetPayment")[0].request == {"payment_id": "p1"}
    """

    def __init__(
        self,
        services: Sequence[str],
        *,
        gen: Path = Path("gen"),
        port: int = 0,
        host: str = "127.0.0.1",
        seed: int = 0,
        stub_files: Sequence[Path] = (),
        admin_port: int | None = None,
        log_calls: bool = True,
        metrics: bool = True,
        publish: Publish | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        bases = discovery.bases(gen, services)
        methods = [m for base in bases for m in base.__keel_service__.methods]
        self.state = MockState(methods, seed)
        for path in stub_files:
            self.state.add(stubs.load(path))
        self.server = Server(
            [implementation(base, self.state) for base in bases],
            port=port,
            host=host,
            grace_period=1.0,
            log_calls=log_calls,
            metrics=metrics,
            interceptors=interceptors,
        )
        self.host = host
        self._admin_port = admin_port
        self._admin: Any = None  # keel.gateway.listener.Listener, once serving
        self.publish = publish

    @property
    def port(self) -> int:
        """The gRPC port (known once started)."""
        return self.server.port

    @property
    def address(self) -> str:
        """`host:port` of the gRPC server, for clients and `keel gateway --target`."""
        return f"{self.host}:{self.server.port}"

    @property
    def admin_port(self) -> int | None:
        """The admin HTTP API's port (None when off)."""
        return self._admin.port if self._admin is not None else self._admin_port

    def calls(self, method: str | None = None) -> list[Call]:
        """The calls received, oldest first (of `method` only: `pkg.Service/Method`,
        `Service/Method` or `Method`)."""
        return self.state.calls(method)

    def clear_calls(self) -> None:
        self.state.clear_calls()

    def stub(
        self,
        method: str,
        *,
        match: Mapping[str, Mapping[str, Any]] | None = None,
        respond: Mapping[str, Any] | None = None,
        error: Mapping[str, Any] | None = None,
        delay: float = 0.0,
        stream: Sequence[Mapping[str, Any]] | None = None,
        sequence: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Add a stub (keys as in a stub file, see docs/mock.md); its id."""
        item: dict[str, Any] = {"method": method, "match": dict(match or {})}
        if sequence is not None:
            item["sequence"] = list(sequence)
        else:
            given = {"respond": respond, "error": error, "stream": stream}
            item |= {k: v for k, v in given.items() if v is not None}
            if delay or len(item) == 2:
                item["delay"] = delay
        return self.add_stubs(item)[0]

    def add_stubs(self, data: Any) -> list[str]:
        """Add stubs from decoded JSON/YAML (one, a list, or `{"stubs": [...]}`); their ids."""
        return [s.id for s in self.state.add(stubs.parse(data, "stub"))]

    def clear_stubs(self, ids: Sequence[str] = ()) -> int:
        """Remove these stubs (none named: all); how many went."""
        return self.state.remove(ids)

    async def start(self) -> None:
        await self.server.start()
        if self._admin_port is not None:
            from keel.gateway.listener import Listener  # noqa: PLC0415

            admin = Listener(Admin(self.state, self.publish), self.host, self._admin_port)
            try:
                await admin.start()
            except BaseException:
                await self.server.stop(0)
                raise
            self._admin = admin

    async def stop(self, grace: float | None = None) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.stop(0)
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(0)
