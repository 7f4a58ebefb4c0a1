"""One child process of `keel dev` (a service, the gateway) that can be stopped and started again.

Its output is relayed line by line behind its colored name; its "serving" log line marks each
start as ready (with the REST port it reports). Stopping is graceful: SIGTERM (the process
drains), then wait until it exited, so its ports are free for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Callable, Mapping, Sequence

from keel.dev import console
from keel.dev.tether import tethered
from keel.dev.warm import Warm
from keel.runtime import listen

_SERVING = re.compile(rb"\] serving\s")  # the event column of the console line, not any "serving"
_REST_PORT = re.compile(rb"\srest_port=(\d+)")
_ANSI = re.compile(rb"\x1b\[[0-9;]*m")
KILL_AFTER = 15.0
"""Seconds a stopped child may take to drain before it is killed."""


PORTS_WAIT = 10.0


def in_use(ports: Sequence[int]) -> list[int]:
    """Those of `ports` that cannot be bound on 127.0.0.1 now (another process listens)."""
    return [port for port in ports if not listen.bindable("127.0.0.1", port)]


async def ports_free(ports: Sequence[int], within: float = PORTS_WAIT) -> bool:
    """Wait until every one of `ports` can be bound on 127.0.0.1 (at most `within` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not all(listen.bindable("127.0.0.1", port) for port in ports):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)  # polling the ports, bounded by the deadline
    return True


class Serving:
    """Set once a start of a child logged its "serving" line, with the REST port it reported."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.rest_port = 0

    def seen(self, line: bytes) -> None:
        plain = _ANSI.sub(b"", line)
        if not self.event.is_set() and _SERVING.search(plain):
            found = _REST_PORT.search(plain)
            self.rest_port = int(found[1]) if found else 0
            self.event.set()


class Child:
    """`command` run with `env`, its lines printed behind `name` in `color`; ready once it logged
    "serving" and `port` (if any) accepts connections; `on_exit(child, status)` is called when
    it exits without being asked to."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        color: str,
        *,
        on_exit: Callable[[Child, int], None] = lambda child, status: None,
        port: int | None = None,
        ports: Sequence[int] = (),
        spare: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.color = color
        self.port = port
        self.ports = tuple(ports)
        """Every port it listens on: free (or only in TIME_WAIT) before it starts again."""
        self.warm = (
            Warm(spare, command, env, on_line=lambda line: console.relayed(self._prefix, line))
            if spare
            else None
        )
        """Its warm spare (`spare`: `python -m keel.dev.spare ... --`), if it has one."""
        self.command = list(command)
        self.env = dict(env)
        self.on_exit = on_exit
        self.serving = Serving()
        self.process: asyncio.subprocess.Process | None = None
        self._prefix = console.prefix(name, color)
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, *, again: bool = False) -> None:
        """Start it, in its warm spare if it has one; `serving` is new for this start. `again`:
        first wait (up to PORTS_WAIT s) until its ports can be bound: a client reconnecting
        while the port was closed can hold it for a moment (a TCP self-connection when the port
        is in the ephemeral range)."""
        if again:
            await ports_free(self.ports)
        self.serving = Serving()
        self._stopping = False
        process = await self.warm.take() if self.warm is not None else None
        if process is None:
            process = await asyncio.create_subprocess_exec(
                *tethered(self.command),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.process = process
        self._watcher = asyncio.ensure_future(self._relay(process, self.serving))

    async def prepare(self) -> None:
        """Have a warm spare ready for the next start (if it has a spare command)."""
        if self.warm is not None:
            await self.warm.prepare()

    async def discard(self) -> None:
        """End the warm spare (it holds the Keel of its start: after Keel changed, say)."""
        if self.warm is not None:
            await self.warm.discard()

    async def _relay(self, process: asyncio.subprocess.Process, serving: Serving) -> None:
        if process.stdout is None:  # pragma: no cover (stdout=PIPE always gives a stream)
            raise RuntimeError("no stdout pipe")
        while line := await process.stdout.readline():
            serving.seen(line)
            console.relayed(self._prefix, line)
        status = await process.wait()
        if not self._stopping and process is self.process:
            self.on_exit(self, status)

    async def ready(self) -> bool:
        """Wait until this start serves (True) or the process exits first (False)."""
        process, serving = self.process, self.serving
        if process is None:
            return False
        watcher = self._watcher
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(serving.event.wait())]
        if watcher is not None:
            waits.append(asyncio.shield(watcher))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for each in waits:
            each.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        if not serving.event.is_set():
            return False
        while self.port is not None and process.returncode is None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)  # polling the port, bounded by the process's life
                continue
            writer.close()
            break
        return process.returncode is None

    def terminate(self) -> None:
        """Ask it to drain and stop (SIGTERM), without waiting."""
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    async def stop(self) -> int | None:
        """SIGTERM, then wait until it exited (killed after KILL_AFTER s) and its output is
        relayed; its exit status (None if it never started)."""
        process = self.process
        if process is None:
            return None
        self.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), KILL_AFTER)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        status = await process.wait()
        if self._watcher is not None:
            await self._watcher
        return status

    async def wait(self) -> int:
        """Until the current start exits (relayed to the end); its exit status."""
        if self.process is None:
            raise RuntimeError(f"{self.name} never started")
        status = await self.process.wait()
        if self._watcher is not None:
            await asyncio.shield(self._watcher)
        return status
