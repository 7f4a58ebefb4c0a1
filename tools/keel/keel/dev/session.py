"""`keel dev`'s startup order and shutdown: the broker, the services, the gateway, Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from keel.dev import console
from keel.dev.child import Child, in_use
from keel.dev.services import (
    DevService,
    free_ports,
    gateway_command,
    gateway_env,
    gateway_spare,
    service_command,
    service_env,
    service_spare,
    survey,
)
from keel.dev.tether import tethered
from keel.events.broker import Broker, BrokerError, start_broker

WATCHING = {"KEEL_BREAKER_RESET": "1"}
"""Defaults under --watch (keel dev's own environment wins): a client's circuit to a service
that was restarting (opened by the calls refused meanwhile) probes again after 1 s, not 30."""


@dataclass
class Session:
    """What runs under one `keel dev`: a child per service (by folder name), the gateway."""

    services: list[DevService]
    children: dict[str, Child]
    rest_ports: dict[str, int]
    gateway: Child | None
    gateway_port: int
    broker: Broker
    watching: bool
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    early: list[str] = field(default_factory=list)
    """Services that exited on their own (without --watch, that stops keel dev)."""
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    def rest_targets(self) -> dict[str, int]:
        """Each served proto service's REST port (full name → port), for the gateway."""
        return {
            name: self.rest_ports[service.name]
            for service in self.services
            if service.name in self.rest_ports
            for name in service.serves
        }

    async def refresh_gateway(self, gen: Path, registry: Path) -> None:
        """Before the gateway starts again: the services' REST ports as they are now (a service
        that arrived, or went, since it started); a warm spare started with others goes."""
        gateway = self.gateway
        if gateway is None:
            return
        env = gateway_env(gen, registry, self.rest_targets())
        if self.watching:
            env = {**WATCHING, **env}
        if env != gateway.env:
            gateway.env = env
            await gateway.discard()
            if gateway.warm is not None:
                gateway.warm.env = dict(env)

    def everyone(self) -> list[Child]:
        return [*self.children.values(), *([self.gateway] if self.gateway else [])]

    def add(self, service: DevService, *, gen: Path, registry: Path, state: Path) -> Child:
        """The child that runs `service` (not started), on a REST port of its own for the whole
        session."""
        if service.name not in self.rest_ports:
            taken = {
                self.gateway_port,
                *self.rest_ports.values(),
                *(s.port for s in self.services),
                *(s.port + 1000 for s in self.services),
                service.port,
                service.port + 1000,
            }
            self.rest_ports[service.name] = free_ports(1, taken)[0]
        rest = self.rest_ports[service.name]
        env = service_env(
            service,
            rest_port=rest,
            gen=gen,
            registry=registry,
            state=state,
            nats_url=self.broker.url,
        )
        used = {c.color for c in self.children.values()}
        free = [c for c in console.COLORS if c not in used] or list(console.COLORS)
        color = free[0]
        child = Child(
            service.name,
            service_command(service),
            {**WATCHING, **env} if self.watching else env,
            color,
            on_exit=self.on_exit,
            port=service.port,
            ports=(service.port, service.port + 1000, rest),
            spare=service_spare(service, gen) if self.watching else (),
        )
        self.services = [*(s for s in self.services if s.name != service.name), service]
        self.children[service.name] = child
        return child

    async def remove(self, name: str, *, keep_port: bool = False) -> None:
        """Stop the child of the service `name` and forget it (its folder is gone), or only its
        child and address (`keep_port`: its REST port stays its own, for its next start)."""
        child = self.children.pop(name, None)
        if not keep_port:
            self.rest_ports.pop(name, None)
        self.services = [s for s in self.services if s.name != name]
        if child is not None:
            await child.stop()
            await child.discard()

    def on_exit(self, child: Child, status: int) -> None:
        if self.watching:
            if not child.serving.event.is_set():
                return  # it did not start: whoever started it says so
            console.say(
                f"{child.name} exited (status {status}); the others keep serving; "
                "save a file to start it again"
            )
            return
        self.early.append(child.name)
        self.exited.set()


START_WAIT = 15.0
"""Seconds a child has to serve, under --watch, before the others go on without it."""


async def _first(*waits: Awaitable[object]) -> None:
    """Until the first of `waits` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(each) for each in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run(
    services_dir: Path,
    registry: Path,
    gen: Path,
    gateway_port: int = 0,
    state: Path = Path(".keel/state"),
    *,
    watch: bool = False,
) -> int:
    """Start a NATS broker storing in `state/nats`, then the services, each with its state
    folder under `state`, then (once they all serve) the REST gateway on `gateway_port`, unless
    0; relay their logs; stop them all on SIGINT/SIGTERM, the broker last. Without `watch`, one
    service exiting stops them all (status 1); with it, saved files reload what they touch
    (keel.dev.watch) and a service that exits waits for the next save."""
    services, problems = survey(services_dir, registry)
    for name, problem in problems.items():  # the others run; under --watch, a save retries
        print(f"keel dev: {name} does not start: {problem}", flush=True)
    if not services:
        print(
            f"keel dev: no services with [tool.keel] serves under {services_dir}"
            " (run it from the repository's root, or pass --services)"
        )
        return 1
    wanted = [*(s.port for s in services), *(s.port + 1000 for s in services)]
    busy = in_use([*wanted, gateway_port] if gateway_port else wanted)
    if busy:  # before the broker: a second one must not share the first one's store
        ports = ("port " if len(busy) == 1 else "ports ") + ", ".join(map(str, sorted(busy)))
        print(
            f"keel dev: {ports} in use on 127.0.0.1: is keel dev (or one of the services)"
            " already running? Stop it first.",
            flush=True,
        )
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    state.mkdir(parents=True, exist_ok=True)
    if not (state / ".gitignore").exists():
        (state / ".gitignore").write_text("# local state of `keel dev`\n*\n")
    try:
        # From this thread: nats-server ends with the thread that started it (keel.dev.tether).
        broker = start_broker((state / "nats").resolve(), wrap=tethered)
    except BrokerError as error:
        print(f"keel dev: cannot start the NATS broker: {error}", flush=True)
        return 1
    console.say(f"NATS broker {broker.url} (JetStream, stored in {broker.store_dir})")
    taken = {gateway_port, *(s.port for s in services), *(s.port + 1000 for s in services)}
    rest = dict(zip((s.name for s in services), free_ports(len(services), taken), strict=True))
    session = Session(services, {}, rest, None, gateway_port, broker, watch, stop)
    for service in services:
        session.add(service, gen=gen, registry=registry, state=state)
    if gateway_port:
        env = gateway_env(gen, registry, session.rest_targets())
        session.gateway = Child(
            "gateway",
            gateway_command(gen, gateway_port),
            {**WATCHING, **env} if watch else env,
            console.BOLD,
            on_exit=session.on_exit,
            port=gateway_port,
            ports=(gateway_port,),
            spare=gateway_spare(gen) if watch else (),
        )
    try:
        await _serve(session, services_dir=services_dir, gen=gen, registry=registry, state=state)
    finally:
        await asyncio.to_thread(broker.stop)
    if session.early and not stop.is_set():
        console.say(f"{', '.join(session.early)} exited early; stopped the others")
        return 1
    console.say("stopped")
    return 0


async def _serve(
    session: Session, *, services_dir: Path, gen: Path, registry: Path, state: Path
) -> None:
    """Start the services, then the gateway; run until Ctrl-C (or, without --watch, until one
    exits); stop them all."""
    stop = session.stop
    children = list(session.children.values())
    for child in children:
        await child.start()
    # Under --watch a service that hangs at start must not hold the others, the gateway or the
    # watch (which restarts it on the next save): they go on after START_WAIT seconds.
    capped = [asyncio.sleep(START_WAIT)] if session.watching else []
    started = asyncio.gather(*(child.ready() for child in children))
    await _first(started, session.exited.wait(), stop.wait(), *capped)
    if session.watching and not stop.is_set():
        for child in children:
            if not child.serving.event.is_set():
                console.say(f"{child.name} is not serving (see above): save a file to retry")
    if session.gateway is not None and not session.exited.is_set() and not stop.is_set():
        await session.gateway.start()
        capped = [asyncio.sleep(START_WAIT)] if session.watching else []
        await _first(session.gateway.ready(), session.exited.wait(), stop.wait(), *capped)
    watcher = None
    if not session.exited.is_set() and not stop.is_set():
        _summary(session)
        if session.watching:
            from keel.dev.watch import Watch  # noqa: PLC0415 (watchfiles for --watch only)

            watch = Watch(
                session, services_dir=services_dir, gen=gen, registry=registry, state=state
            )
            watcher = asyncio.ensure_future(watch.run())
        console.say("Ctrl-C stops them all")
    await _first(session.exited.wait(), stop.wait())
    if watcher is not None:
        watcher.cancel()  # a reload under way ends here; its children stop below
        await asyncio.gather(watcher, return_exceptions=True)
    for child in session.everyone():
        child.terminate()
    await asyncio.gather(*(child.stop() for child in session.everyone()))
    await asyncio.gather(*(child.discard() for child in session.everyone()))


def _summary(session: Session) -> None:
    print("keel dev: services (gRPC, REST, metrics):")
    for service in session.services:
        child = session.children[service.name]
        port = child.serving.rest_port or session.rest_ports[service.name]
        rest = f"http://127.0.0.1:{port}" if child.serving.event.is_set() else "-"
        for full_name in service.serves:
            metrics = f"http://127.0.0.1:{service.port + 1000}/metrics"
            print(f"  {full_name:<36} 127.0.0.1:{service.port}  {rest}  {metrics}")
    print(f"keel dev: events: NATS JetStream {session.broker.url}")
    if session.gateway is not None and session.gateway.serving.event.is_set():
        url = f"http://127.0.0.1:{session.gateway_port}"
        print(f"keel dev: REST gateway {url}, API docs {url}/docs")
        print(f"keel dev: try: curl {url}/v1/products/p_mug")
    print(end="", flush=True)
