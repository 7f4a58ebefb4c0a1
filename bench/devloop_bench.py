"""Save-to-serving of `keel dev --watch` (what `make run` runs): how long after a file is saved
the running shop serves the change.

In a copy of the repository (proto/, gen/, services/, buf.yaml: what keel dev reads and
writes), `keel dev --watch` runs the three example services and the gateway. Each round:

- `python`: catalog's service.py is saved with a change to what GetProduct answers (the
  title upper-cased, then back); measured until catalog's own REST port answers the new title.
- `proto`: catalog.proto is saved with one more rpc and its `google.api.http` route; measured
  until the gateway answers that route (501: declared, not implemented; 404 before). That is
  buf lint, keel gen, and catalog, orders (it calls catalog) and the gateway restarted.

Before each save, keel dev's processes are left to settle (1.5 s without CPU work: the warm
spares of the restarted processes ready), as between a developer's saves. The clock starts just
before the file is written and stops at the first answer that shows the change (polled every
10 ms); the file watcher's batching (50 ms) is included. keel dev's own figure (from the change
it saw to every restarted process serving) is printed beside it.
Target: median and max under 2 s for a one-file change.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from keel.testing.ports import free_port_pair

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_S = 2.0
SERVICES = (
    "acme.catalog.v1.CatalogService",
    "acme.orders.v1.OrderService",
    "acme.payments.v1.PaymentService",
)
COPIED = ("proto", "gen", "services", "tools/keel/keel/protos", "buf.yaml", "docs/architecture.md")
CODE = "services/catalog/src/catalog/service.py"
PROTO = "proto/acme/catalog/v1/catalog.proto"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Sample:
    kind: str
    seconds: float
    """Save to the first answer showing the change."""
    reported: float
    """keel dev's own "serving again in" figure."""


def _get(url: str) -> tuple[int, bytes]:
    try:
        with _DIRECT.open(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


class Dev:
    """`keel dev --watch` running in a copy of the repository."""

    def __init__(self, work: Path) -> None:
        self.root = work / "repo"
        skipped = shutil.ignore_patterns("__pycache__", ".keel", "*.sqlite3*")
        for part in COPIED:
            target = self.root / part
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / part).is_dir():
                shutil.copytree(REPO / part, target, ignore=skipped)
            else:
                shutil.copy2(REPO / part, target)
        registry = work / "registry.toml"
        ports = [f'"{name}" = "127.0.0.1:{free_port_pair()}"' for name in SERVICES]
        registry.write_text("[targets]\n" + "\n".join(ports) + "\n")
        self.gateway = f"http://127.0.0.1:{free_port_pair()}"
        self.log = work / "dev.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    *(str(BIN / "keel"), "dev", "--watch", "--registry", str(registry)),
                    *("--gateway-port", self.gateway.rpartition(":")[2]),
                    *("--state-dir", str(work / "state")),
                ],
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            self.wait(lambda: "keel dev: watching " in self.output(), "keel dev started")
            address = re.compile(r"^\s+(\S+)\s+127\.0\.0\.1:\d+\s+(http://\S+)\s", re.M)
            self.rest = dict(address.findall(self.output()))
            self.wait(lambda: _get(f"{self.gateway}/healthz")[0] == 200, "the gateway serves")
        except BaseException:
            self.stop()  # (its children end with it: keel.dev.tether)
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def reloads(self) -> list[str]:
        lines = self.output().splitlines()
        return [_ANSI.sub("", line) for line in lines if line.startswith("keel dev: reload:")]

    def wait(self, condition: object, what: str, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while not condition():  # type: ignore[operator]
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not seen\n{self.output()[-4000:]}")
            time.sleep(0.01)

    def cpu_seconds(self) -> float:
        """CPU time of keel dev and every process under it."""
        total, todo = 0.0, [self.process.pid]
        tick = os.sysconf("SC_CLK_TCK")
        while todo:
            pid = todo.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
            todo.extend(int(child) for child in children)
        return total

    def settle(self, within: float = 30) -> None:
        """Until keel dev's processes have been idle for 1.5 s (the warm spares ready: they warm
        one after the other): a developer's next save comes seconds after the last reload."""
        deadline = time.monotonic() + within
        before, quiet = self.cpu_seconds(), 0
        while quiet < 5 and time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - before < 0.06 else 0  # under a fifth of a core
            before = now

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        finally:
            self.process.kill()


def _saved(dev: Dev, path: str, old: str, new: str) -> float:
    """Replace `old` with `new` in `path`; when it was written."""
    file = dev.root / path
    text = file.read_text()
    if old not in text:
        raise RuntimeError(f"{old!r} not in {path}")
    started = time.perf_counter()
    file.write_text(text.replace(old, new, 1))
    return started


def _reported(dev: Dev, seen: int) -> float:
    dev.wait(lambda: len(dev.reloads()) > seen, "the reload line")
    line = dev.reloads()[seen]
    found = re.search(r"serving again in ([0-9.]+) s", line)
    if not found:
        raise RuntimeError(f"not every process came back: {line}")
    return float(found[1])


def python_round(dev: Dev, index: int) -> Sample:
    catalog = dev.rest["acme.catalog.v1.CatalogService"]
    upper = index % 2 == 0
    old, new = "title=product.title,", "title=product.title.upper(),"
    expected = "MUG" if upper else "Mug"
    seen = len(dev.reloads())
    started = _saved(dev, CODE, *((old, new) if upper else (new, old)))

    def shows() -> bool:
        status, body = _get(f"{catalog}/v1/products/p_mug")
        return status == 200 and json.loads(body)["title"] == expected

    dev.wait(shows, f"catalog answers {expected}")
    seconds = time.perf_counter() - started
    return Sample("python", seconds, _reported(dev, seen))


def proto_round(dev: Dev, index: int) -> Sample:
    name = f"BenchPing{index}"
    route = f"/v1/catalog:bench{index}"
    seen = len(dev.reloads())
    rpc = (
        f"  rpc {name}({name}Request) returns ({name}Response) {{\n"
        f'    option (google.api.http) = {{get: "{route}"}};\n'
        "  }\n"
    )
    messages = f"\nmessage {name}Request {{}}\n\nmessage {name}Response {{}}\n"
    file = dev.root / PROTO
    text = file.read_text()
    anchor = "  rpc GetProduct(GetProductRequest)"
    started = time.perf_counter()
    file.write_text(text.replace(anchor, rpc + anchor, 1) + messages)
    dev.wait(lambda: _get(f"{dev.gateway}{route}")[0] == 501, f"the gateway serves {route}")
    seconds = time.perf_counter() - started
    return Sample("proto", seconds, _reported(dev, seen))


def report(samples: list[Sample]) -> None:
    print(f"{'change':<8} {'round':>5} {'save-to-serving s':>18} {'keel dev says s':>16}")
    for kind in ("python", "proto"):
        for index, sample in enumerate(s for s in samples if s.kind == kind):
            print(f"{kind:<8} {index + 1:>5} {sample.seconds:>18.2f} {sample.reported:>16.2f}")
    for kind in ("python", "proto"):
        times = [s.seconds for s in samples if s.kind == kind]
        if not times:
            continue
        median, worst = statistics.median(times), max(times)
        print(
            f"{kind}: save-to-serving median {median:.2f} s, max {worst:.2f} s;"
            f" ratio median/target {median / TARGET_S:.2f}x, max/target {worst / TARGET_S:.2f}x"
            f" (target < 1x: {TARGET_S:.0f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log", type=Path, help="keep keel dev's console output in LOG")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-devloop-") as work:
        dev = Dev(Path(work))
        samples: list[Sample] = []
        try:
            for index in range(args.rounds):
                dev.settle()
                samples.append(python_round(dev, index))
                dev.settle()
                samples.append(proto_round(dev, index))
        finally:
            dev.stop()
            if args.log:
                shutil.copy(dev.log, args.log)
    print(f"keel dev --watch: {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    report(samples)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
