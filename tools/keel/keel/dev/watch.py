"""`keel dev --watch`: each batch of saved files reloads what it touches, in one console line.

- A `.proto`: lint and regenerate (keel.dev.regen); then restart the services the changed protos
  touch (keel.system.affected: they serve it, call it, subscribe to its events, or import it)
  and the gateway (its routes come from gen/). A lint finding or a generation error is printed
  and nothing restarts: everything keeps running on the last good generation, and the next
  good save regenerates for every proto changed since.
- A service's code (its package, migrations, pyproject.toml): restart that service alone.
- Keel itself (tools/, the registry, as `keel affected` counts it): restart every service and
  the gateway (keel dev itself keeps running the code it started with).

A restart is graceful: SIGTERM, drain, wait until the process exited (its ports are free), start
it again on the same ports; a service that fails to start prints why behind its name and waits
for the next save while the others keep serving.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from pathlib import Path

from watchfiles import awatch

from keel.dev import changes, console, regen
from keel.dev.child import Child
from keel.dev.services import gen_spare, survey
from keel.dev.session import START_WAIT, Session
from keel.dev.warm import Warm
from keel.system import contracts as contracts_
from keel.system import packages as packages_
from keel.toolchain import workspace
from keel.toolchain.errors import BuildError, GenerateError

_RED = "\033[31m"

_NO_CONTRACTS = contracts_.Contracts({}, {}, {}, {}, {})


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path.resolve(), root)).as_posix()


class Watch:
    """The watch loop of one `keel dev` session, run from the workspace's root (cwd)."""

    def __init__(
        self, session: Session, *, services_dir: Path, gen: Path, registry: Path, state: Path
    ) -> None:
        self.session = session
        self.root = Path.cwd().resolve()
        self.services_dir = services_dir
        self.services = _relative(services_dir, self.root)
        self.gen = gen
        self.gen_rel = _relative(gen, self.root)
        self.registry = registry
        self.unadopted: dict[str, str] = {}
        """Why each service folder that cannot run could not, at the last save."""
        self.state = state
        self.ignored = [gen.resolve(), state.resolve()]
        self.pending: set[str] = set()
        """Protos saved since the last good generation."""
        self.contracts = _NO_CONTRACTS
        self.packages: list[packages_.Package] = []
        self.redrawing: asyncio.Task[list[str]] | None = None
        self.warming: asyncio.Task[None] | None = None
        self.keel_gen = Warm(gen_spare(gen), regen.keel_gen(gen), cwd=self.root)

    def folders(self) -> list[Path]:
        """The proto modules of buf.yaml, the services, and Keel's sources if they are here."""
        found = [self.services_dir.resolve(), self.root / "tools"]
        try:
            found += [self.root / m.path for m in workspace.load(self.root).modules]
        except workspace.WorkspaceError as error:
            console.say(f"cannot read buf.yaml ({error}): not watching protos")
        kept: list[Path] = []
        for folder in sorted({f for f in found if f.is_dir()}):
            if not any(folder.is_relative_to(k) for k in kept):
                kept.append(folder)
        return kept

    async def _load(self) -> None:
        """The contracts and service packages as the files are now; the last ones read are
        kept when they cannot be read (protos that do not compile: then the generation fails
        too and nothing restarts for them; a service file that does not parse)."""
        try:
            found = await asyncio.to_thread(contracts_.load, self.root)
        except (workspace.WorkspaceError, BuildError, GenerateError):
            found = self.contracts
        self.contracts = found
        try:
            self.packages = await asyncio.to_thread(
                packages_.discover, self.root, found, self.services
            )
        except (SyntaxError, ValueError, OSError) as error:  # (a TOML error is a ValueError)
            console.say(f"cannot read the service packages ({error}): using the last ones read")

    def _known(self, protos: set[str]) -> set[str]:
        """Those of `protos` (paths from the root) that are files of the contracts last read."""
        files = {file.as_posix() for file in self.contracts.files.values()}
        return protos & files

    async def run(self) -> None:
        """Until the session stops."""
        await self._load()
        self._warm([])
        folders = self.folders()
        saved_files = changes.SavedFiles(self.ignored)
        batches = awatch(
            *folders,
            watch_filter=saved_files,
            stop_event=self.session.stop,
            step=50,
        )
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0)  # its first step watches the folders, then it waits in a thread
        shown = ", ".join(f"{_relative(f, self.root)}/" for f in folders)
        console.say(f"watching {shown}: a saved file restarts the services it touches")
        try:
            while True:
                try:
                    batch = await waiting
                except StopAsyncIteration:
                    return
                paths = changes.relative(batch, self.root, saved_files)
                saved = changes.Saved.sort(paths, self.services)
                if saved and not self.session.stop.is_set():
                    try:
                        await self.reload(saved)
                    except Exception:  # a bug here must not end the watch: say it, go on
                        console.say(f"{_RED}reload failed{console.RESET}, watching on:")
                        for line in traceback.format_exc().splitlines():
                            console.say(f"  {line}")
                waiting = asyncio.ensure_future(anext(batches))
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await batches.aclose()
            for task in (self.redrawing, self.warming):
                if task is not None:
                    task.cancel()
            await self.keel_gen.discard()

    async def reload(self, saved: changes.Saved) -> None:
        """Regenerate if protos were saved, then restart what the saved files touch."""
        started = time.perf_counter()
        restart: set[str] = set()
        gateway = False
        done: list[str] = []
        keel = [p for p in (*saved.code, *saved.protos) if changes.is_keel(p)]
        if keel:  # first: the spares hold the Keel of their start, the `keel gen` one too
            await asyncio.gather(
                self.keel_gen.discard(), *(c.discard() for c in self.session.everyone())
            )
        if saved.protos:
            touched = await self._regenerate(saved, done)
            if touched is None and not saved.code:
                return
            if touched is not None:
                restart |= touched
                gateway = True
        arrived, said = await self._adopt()
        if said:
            done += said
            restart |= arrived
            gateway = True
        if saved.code:
            restart |= changes.touched(saved.code, self.contracts, self.packages, self.gen_rel)
        if keel:
            gateway = True
        children = [c for name, c in self.session.children.items() if name in restart]
        if not children and not (gateway and self.session.gateway):
            console.say(f"{saved.describe()} changed: it touches no service")
            return
        front = self.session.gateway if gateway else None
        stopping = asyncio.ensure_future(front.stop() if front else asyncio.sleep(0))
        serving = list(await asyncio.gather(*(self._restart(child) for child in children)))
        await stopping
        if front is not None:
            # After the services: a gateway that started first would see them refuse its calls
            # (and open its circuits to them).
            children.append(front)
            serving.append(await self._restart(front))
        seconds = time.perf_counter() - started
        if (saved.protos and not self.pending) or said:  # the contracts or the services changed
            self.redrawing = asyncio.ensure_future(self._redraw())
        self._warm(children)
        done.append(f"restarted {', '.join(c.name for c in children)}")
        failed = [c.name for c, ok in zip(children, serving, strict=True) if not ok]
        _report(saved, done, failed, seconds)

    async def _regenerate(self, saved: changes.Saved, done: list[str]) -> set[str] | None:
        """Lint and regenerate for the protos saved since the last good generation: the
        services they touch, or None if the generation failed (said on the console)."""
        if self.redrawing is not None:
            await asyncio.gather(self.redrawing, return_exceptions=True)
        self.pending.update(saved.protos)
        known = self._known(self.pending)
        before = changes.touched(known, self.contracts, self.packages, self.gen_rel)
        loading = asyncio.ensure_future(self._load())
        generated = await regen.regenerate(self.root, self.gen, sorted(self.pending), self.keel_gen)
        await loading
        if not generated.ok:
            self._failed(saved, generated)
            return None
        done.append(f"regenerated in {generated.seconds:.2f} s")
        # Before and after, each for the protos it knows: a deleted proto is no longer in the
        # contracts read now, a new one was not in those before (and no running service can use
        # it yet). A proto neither knows touches every service.
        known_now = self._known(self.pending)
        unknown = self.pending - known - known_now
        self.pending.clear()
        return before | changes.touched(
            known_now | unknown, self.contracts, self.packages, self.gen_rel
        )

    def _warm(self, first: list[Child]) -> None:
        """Warm a spare for `keel gen` and for every child that has none, one at a time (they
        share the cores with the services starting), those just restarted first: the next
        save most likely touches them again."""
        previous = self.warming
        order = [*first, *(c for c in self.session.everyone() if c not in first)]

        async def warm() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.keel_gen.prepare()
            for child in order:
                if child not in self.session.everyone():  # its service went meanwhile
                    continue
                await child.prepare()

        self.warming = asyncio.ensure_future(warm())

    async def _restart(self, child: Child) -> bool:
        """Stop `child`, start it again; whether it serves (within START_WAIT s: one that
        hangs at start keeps running, and the next save stops it)."""
        await child.stop()
        if self.session.stop.is_set():
            return False
        if child is self.session.gateway:  # with the services' REST ports as they are now
            await self.session.refresh_gateway(self.gen, self.registry)
        await child.start(again=True)
        try:
            return await asyncio.wait_for(child.ready(), START_WAIT)
        except TimeoutError:
            return False

    async def _adopt(self) -> tuple[set[str], list[str]]:
        """Run the service folders that appeared under services/ since keel dev started (`keel
        new service`), stop those that went, start anew those whose address in the registry
        changed: the names of those to start, and what was done. A folder still being written
        (no `__main__.py` yet, no address in the registry) waits for a later save."""
        found, problems = await asyncio.to_thread(survey, self.services_dir, self.registry)
        for name, problem in problems.items():
            if name not in self.session.children and self.unadopted.get(name) != problem:
                console.say(f"{name} does not start yet: {problem}")  # once, not at every save
        self.unadopted = problems
        present = {s.name for s in found} | set(problems)
        known = {s.name: s for s in self.session.services}
        moved = {s.name for s in found if s.name in known and known[s.name] != s}
        for name in sorted(moved):  # another port, package or services: started anew
            await self.session.remove(name, keep_port=True)
        running = set(self.session.children)
        arrived = {s.name for s in found} - running
        left = running - present
        ports = {s.name: s.port for s in found}
        said = [
            f"{name} moved to 127.0.0.1:{ports[name]}"
            if ports[name] != known[name].port
            else f"{name} changed (its package or services)"
            for name in sorted(moved)
        ]
        for service in found:
            if service.name in arrived:
                self.session.add(service, gen=self.gen, registry=self.registry, state=self.state)
                if service.name in moved:
                    continue
                rest = self.session.rest_ports[service.name]
                said.append(
                    f"new service {service.name} (gRPC 127.0.0.1:{service.port},"
                    f" REST http://127.0.0.1:{rest})"
                )
        for name in sorted(left):
            await self.session.remove(name)
            said.append(f"stopped {name} (no longer a service folder)")
        if said:
            await self._load()  # the packages: which service a file belongs to
        return arrived, said

    async def _redraw(self) -> list[str]:
        problems = await regen.redraw(self.root, self.services, self.gen)
        for line in problems:
            console.say(f"keel graph: {line}")
        return problems

    def _failed(self, saved: changes.Saved, generated: regen.Generated) -> None:
        console.say(
            f"{_RED}generation failed{console.RESET} after {saved.describe()} changed;"
            " everything keeps running on the last good generation (save again to retry):"
        )
        for line in generated.lines:
            console.say(f"  {line}")


def _report(saved: changes.Saved, done: list[str], failed: list[str], seconds: float) -> None:
    """The reload's one console line."""
    if failed:
        console.say(
            f"reload: {saved.describe()} changed; {'; '.join(done)};"
            f" {_RED}{', '.join(failed)} not serving{console.RESET} (see above: save again"
            f" to retry), the others serving in {seconds:.2f} s"
        )
    else:
        console.say(
            f"reload: {saved.describe()} changed; {'; '.join(done)};"
            f" serving again in {seconds:.2f} s"
        )
