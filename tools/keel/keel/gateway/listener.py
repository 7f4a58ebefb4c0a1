"""An ASGI app served by uvicorn on the event loop that is already running (a gRPC server's).

uvicorn's own `serve()` takes over the process's signals; a Keel server keeps them (it drains
on SIGTERM), so this starts and stops uvicorn's server by hand: bind, serve, and on `stop`
refuse new connections and give the requests in flight a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn

from keel.gateway.serve import reuse_port_socket, uvicorn_config


class Listener:
    """`app` on `host:port` (0: a free port) in this event loop; `reuse_port` lets several
    processes share the port (workers)."""

    def __init__(self, app: Any, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.config = uvicorn_config(app, host, port)
        self.config.lifespan = "off"  # the server that owns the app starts and stops it
        self.reuse_port = reuse_port
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._ticks: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] | None = None

    async def start(self) -> None:
        """Bind and serve; `port` is the port bound."""
        config = self.config
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        if self.reuse_port:
            self._sockets = [reuse_port_socket(config.host, config.port)]
        try:
            await server.startup(sockets=self._sockets)
        except SystemExit:  # uvicorn's answer to a port it cannot bind
            raise OSError(f"cannot listen on {config.host}:{config.port}") from None
        self._server = server
        self.port = int(server.servers[0].sockets[0].getsockname()[1])
        self._ticks = asyncio.ensure_future(server.main_loop())  # the Date header, each second

    async def stop(self, grace: float) -> None:
        """Refuse new connections, let requests in flight finish within `grace` seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        if self._ticks is not None:
            self._ticks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        self.config.timeout_graceful_shutdown = max(1, round(grace))
        await server.shutdown(sockets=self._sockets)
