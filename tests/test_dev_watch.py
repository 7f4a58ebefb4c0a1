"""`keel dev --watch` (what `make run` runs) in a copy of the repository, as a developer uses it:
a saved service file restarts that service alone, which then serves the new code over REST and
gRPC; code that fails to start prints its traceback behind the service's name while the others
keep serving; a saved proto with a lint error prints buf's finding and restarts nothing; the
fixed proto is regenerated and the services it touches serve its new route.

The copy holds what keel dev reads and writes (proto/, gen/, services/, buf.yaml, Keel's protos
and the architecture page), a megabyte: Keel itself and the virtualenv are this repository's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from acme.catalog.v1 import catalog_keel, catalog_pb2
from keel.dev import changes
from keel.runtime.config import Settings
from watchfiles import Change

from tests import devprocess
from tests.conftest import BIN, REPO, answers, registry_ports, unused_service_name

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_COPIED = ("proto", "gen", "services", "tools/keel/keel/protos", "buf.yaml", "docs/architecture.md")
_CATALOG_CODE = "services/catalog/src/catalog/service.py"
_CATALOG_PROTO = "proto/acme/catalog/v1/catalog.proto"


def copy_repository(into: Path) -> Path:
    """What `keel dev --watch` reads and writes, copied from this repository into `into`."""
    skipped = shutil.ignore_patterns("__pycache__", ".keel", "*.sqlite3*", ".pytest_cache")
    for part in _COPIED:
        source, target = REPO / part, into / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=skipped)
        else:
            shutil.copy2(source, target)
    return into


@dataclass
class Dev:
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    registry: Path
    gateway: str
    rest: dict[str, str]
    """Each service's REST address, as keel dev printed it."""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def reloads(self) -> list[str]:
        """keel dev's own lines, without colors."""
        lines = self.output().splitlines()
        return [_ANSI.sub("", line) for line in lines if line.startswith("keel dev: ")]

    def wait_for(self, condition: Callable[[], bool], what: str, within: float = 90) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert self.process.poll() is None, self.output()[-6000:]
            assert time.monotonic() < deadline, f"{what}:\n{self.output()[-6000:]}"
            time.sleep(0.05)  # polling for the condition, not waiting a fixed time

    def wait_for_line(self, pattern: str, after: int) -> str:
        """The first of keel dev's own lines matching `pattern` among those after the first
        `after` (waited for)."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.reloads()[after:] if re.search(pattern, line)]
            return bool(found)

        self.wait_for(seen, f"a line matching {pattern!r}")
        return found[0]

    def starts(self, name: str) -> int:
        """How many times `name` logged "serving" (each start logs it once)."""
        serving = re.compile(r"\] serving\s")
        prefix = f"{name}\x1b[0m │ "
        return sum(
            1
            for line in self.output().splitlines()
            if prefix in line and serving.search(_ANSI.sub("", line))
        )

    def all_starts(self) -> dict[str, int]:
        return {name: self.starts(name) for name in ("catalog", "orders", "payments", "gateway")}


def _call(url: str) -> tuple[int, Any]:
    try:
        with _DIRECT.open(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, None


def _answers_with(url: str, status: int) -> Callable[[], bool]:
    return lambda: _call(url)[0] == status


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    folder = tmp_path_factory.mktemp("dev-watch")
    root = copy_repository(folder / "repo")
    launched = devprocess.launch(folder, "--watch", cwd=root)
    process, gateway = launched.process, launched.gateway
    started = Dev(root, process, launched.log, launched.registry, gateway, {})
    try:
        started.wait_for(lambda: "keel dev: watching " in started.output(), "keel dev started")
        started.wait_for(lambda: answers(f"{gateway}/healthz"), "the gateway serves")
        address = re.compile(r"^\s+(\S+)\s+127\.0\.0\.1:\d+\s+(http://\S+)\s", re.M)
        started.rest = dict(address.findall(started.output()))
        yield started
    finally:
        running = devprocess.descendants(process.pid)  # services, spares, gateway, broker
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0, started.output()[-6000:]
        finally:
            process.kill()
    output = started.output()
    assert output.rstrip().endswith("keel dev: stopped"), output[-3000:]
    left = [pid for pid in running if devprocess.alive(pid)]
    assert not left, f"outlived keel dev: {left}"  # no service, spare, gateway or broker


def _title_over_grpc(dev: Dev) -> str:
    async def call() -> str:
        settings = Settings(registry=str(dev.registry))
        async with catalog_keel.CatalogServiceClient.connect(settings=settings) as catalog:
            reply = await catalog.get_product(catalog_pb2.GetProductRequest(product_id="p_mug"))
        return str(reply.product.title)

    return asyncio.run(call())


def test_a_saved_service_file_restarts_that_service_alone(dev: Dev) -> None:
    catalog = dev.rest["acme.catalog.v1.CatalogService"]
    orders = dev.rest["acme.orders.v1.OrderService"]
    assert _call(f"{catalog}/v1/products/p_mug")[1]["title"] == "Mug"
    before = dev.all_starts()
    assert before == {"catalog": 1, "orders": 1, "payments": 1, "gateway": 1}
    seen = len(dev.reloads())

    _edit(dev.root / _CATALOG_CODE, "title=product.title,", "title=product.title.upper(),")
    line = dev.wait_for_line(r"reload: .*service\.py changed", seen)
    assert "restarted catalog;" in line
    assert "serving again in" in line
    # The new code answers on the same REST port, over gRPC, and through the gateway.
    assert _call(f"{catalog}/v1/products/p_mug")[1]["title"] == "MUG"
    assert _title_over_grpc(dev) == "MUG"
    dev.wait_for(
        lambda: (_call(f"{dev.gateway}/v1/products/p_mug")[1] or {}).get("title") == "MUG",
        "the gateway reaches the restarted catalog",
    )
    assert dev.all_starts() == {**before, "catalog": 2}

    # Code that fails at start: its traceback behind its name; the others keep serving.
    seen = len(dev.reloads())
    _edit(
        dev.root / _CATALOG_CODE,
        "\nUPDATABLE = ",
        '\nraise RuntimeError("broken on purpose")\nUPDATABLE = ',
    )
    line = dev.wait_for_line(r"reload: .*service\.py changed", seen)
    assert "catalog not serving" in line
    assert "catalog\x1b[0m │ RuntimeError: broken on purpose" in dev.output()
    assert _call(f"{orders}/v1/orders/o_missing")[0] == 404  # orders answers meanwhile
    assert dev.all_starts() == {**before, "catalog": 2}

    # The next save retries.
    seen = len(dev.reloads())
    _edit(dev.root / _CATALOG_CODE, '\nraise RuntimeError("broken on purpose")\n', "\n")
    line = dev.wait_for_line(r"reload: .*service\.py changed", seen)
    assert "restarted catalog; serving again in" in line
    assert _call(f"{catalog}/v1/products/p_mug")[1]["title"] == "MUG"


def test_a_service_file_that_does_not_parse_leaves_the_watch_running(dev: Dev) -> None:
    payments = dev.root / "services/payments/src/payments/service.py"
    seen = len(dev.reloads())
    _edit(payments, "\nclass ", "\ndef broken(:\n\n\nclass ")  # a syntax error
    line = dev.wait_for_line(r"reload: .*payments/service\.py changed", seen)
    assert "payments not serving" in line
    # The watch goes on: another service's save still reloads it.
    seen = len(dev.reloads())
    _edit(dev.root / _CATALOG_CODE, "\nUPDATABLE = ", "\n# saved again\nUPDATABLE = ")
    line = dev.wait_for_line(r"reload: .*catalog/service\.py changed", seen)
    assert "restarted catalog; serving again in" in line
    seen = len(dev.reloads())
    _edit(payments, "\ndef broken(:\n\n\n", "\n")
    line = dev.wait_for_line(r"reload: .*payments/service\.py changed", seen)
    assert "restarted payments; serving again in" in line


def test_a_saved_proto_is_linted_regenerated_and_served(dev: Dev) -> None:
    catalog = dev.rest["acme.catalog.v1.CatalogService"]
    before = dev.all_starts()
    seen = len(dev.reloads())
    proto = dev.root / _CATALOG_PROTO
    _edit(
        proto,
        "message GetProductRequest {\n",
        "message GetProductRequest {\n  string badName = 99;\n",
    )
    dev.wait_for_line(r"generation failed after proto/acme/catalog/v1/catalog\.proto", seen)
    finding = dev.wait_for_line(r"buf lint: ", seen)
    line_number = proto.read_text().splitlines().index("  string badName = 99;") + 1
    assert f"{_CATALOG_PROTO}:{line_number}:" in finding
    assert "badName" in finding
    assert "badName" not in (dev.root / "gen/acme/catalog/v1/catalog_pb2.pyi").read_text()
    # Everything keeps serving the last good generation.
    assert _call(f"{catalog}/v1/products/p_mug")[0] == 200
    assert _call(f"{dev.gateway}/v1/catalog:ping")[0] == 404
    assert dev.all_starts() == before

    # The fix, with a new rpc and its route: regenerated, the services using catalog.proto
    # (catalog serves it, orders calls it) and the gateway restarted, payments untouched.
    seen = len(dev.reloads())
    _edit(proto, "  string badName = 99;\n", "")
    _edit(
        proto,
        "  rpc GetProduct(GetProductRequest)",
        "  // Says the catalog is there.\n"
        "  rpc PingCatalog(PingCatalogRequest) returns (PingCatalogResponse) {\n"
        '    option (google.api.http) = {get: "/v1/catalog:ping"};\n'
        "  }\n"
        "  rpc GetProduct(GetProductRequest)",
    )
    proto.write_text(
        proto.read_text() + "\nmessage PingCatalogRequest {}\n\nmessage PingCatalogResponse {}\n"
    )
    line = dev.wait_for_line(r"reload: proto/acme/catalog/v1/catalog\.proto changed", seen)
    assert "regenerated in" in line
    restarted = re.search(r"restarted ([a-z, ]+);", line)
    assert restarted, line
    assert set(restarted[1].split(", ")) == {"catalog", "orders", "gateway"}
    assert "PingCatalog" in (dev.root / "gen/acme/catalog/v1/catalog_pb2.pyi").read_text()
    # The new route, served by the gateway and by catalog's own REST port (it is not
    # implemented: 501, where it was 404).
    for base in (dev.gateway, catalog):
        ping = f"{base}/v1/catalog:ping"
        dev.wait_for(_answers_with(ping, 501), ping)
        assert "PingCatalog is not implemented" in _call(ping)[1]["message"]
    after = dev.all_starts()
    assert after["payments"] == before["payments"]
    assert [after[n] - before[n] for n in ("catalog", "orders", "gateway")] == [1, 1, 1]
    dev.wait_for(
        lambda: "PingCatalog" in (dev.root / "docs/architecture.md").read_text(),
        "the architecture page is redrawn (as make gen does)",
    )


def test_a_proto_no_service_uses_restarts_the_gateway_alone(dev: Dev) -> None:
    """A new proto file (messages only, imported by no service's proto) is generated and
    served to the gateway; no service restarts for it, nor when it is deleted again."""
    before = dev.all_starts()
    package = unused_service_name("notes", dev.root)  # (no proto package of that name yet)
    notes = dev.root / f"proto/acme/{package}/v1/{package}.proto"
    notes.parent.mkdir(parents=True)
    seen = len(dev.reloads())
    notes.write_text(
        f'syntax = "proto3";\n\npackage acme.{package}.v1;\n\n'
        "// A note.\nmessage Note {\n  // What it says.\n  string text = 1;\n}\n"
    )
    changed = rf"reload: proto/acme/{package}/v1/{package}\.proto changed"
    line = dev.wait_for_line(changed, seen)
    assert "regenerated in" in line
    assert "restarted gateway;" in line, line
    assert (dev.root / f"gen/acme/{package}/v1/{package}_pb2.py").is_file()
    assert dev.all_starts() == {**before, "gateway": before["gateway"] + 1}

    seen = len(dev.reloads())
    notes.unlink()
    line = dev.wait_for_line(changed, seen)
    assert "restarted gateway;" in line, line
    assert dev.all_starts() == {**before, "gateway": before["gateway"] + 2}


def test_a_new_service_folder_is_served_and_a_removed_one_stopped(dev: Dev) -> None:
    """`keel new service` while keel dev runs: the new service starts (its proto generated),
    the gateway serves its route; deleting its folder stops it."""
    shutil.copy2(REPO / "pyproject.toml", dev.root / "pyproject.toml")  # keel new edits it
    name = unused_service_name("inventory", dev.root)  # (the workspace may have an inventory)
    port = devprocess.free_pair(avoid=registry_ports(dev.root))  # one keel new accepts
    # keel dev was given its own registry (free ports): the new address goes there too.
    with dev.registry.open("a") as registry:
        registry.write(f'"acme.{name}.v1.{name.capitalize()}Service" = "127.0.0.1:{port}"\n')
    before = dev.all_starts()
    seen = len(dev.reloads())
    made = subprocess.run(
        [str(BIN / "keel"), "new", "service", name, "--port", str(port)],
        cwd=dev.root,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))},
    )
    assert made.returncode == 0, made.stdout + made.stderr
    line = dev.wait_for_line(rf"new service {name}\b", seen)
    assert f"gRPC 127.0.0.1:{port}" in line
    rest = re.search(r"REST (http://127\.0\.0\.1:\d+)", line)
    assert rest, line
    dev.wait_for_line(r"reload: .*serving again in", seen)
    item = devprocess.new_item(dev.gateway, name=name)
    assert item["title"] == "first"
    # Its own REST port serves it too, and the services already running kept serving.
    assert _call(f"{rest[1]}/v1/{name}/items/{item['itemId']}") == (200, item)
    assert _call(f"{dev.gateway}/v1/products/p_mug")[0] == 200
    assert dev.starts(name) >= 1  # (keel new writes in steps: a save may restart it)
    # services/registry.toml changed too: like any change to Keel's own files, it restarts all
    # (keel new writes it last: in the same batch of changes or the next).
    dev.wait_for(
        lambda: (
            all(after > before[shop] for shop, after in dev.all_starts().items())
            and "serving again in" in dev.reloads()[-1]
        ),
        "every service restarted for the registry's change",
    )

    # Another address in the registry: the service starts anew on it, with its data.
    moved = devprocess.free_pair()
    dev.registry.write_text(dev.registry.read_text().replace(f':{port}"', f':{moved}"'))
    seen = len(dev.reloads())
    with (dev.root / "services/registry.toml").open("a") as saved:
        saved.write("# moved\n")
    dev.wait_for_line(rf"{name} moved to 127\.0\.0\.1:{moved}", seen)
    dev.wait_for_line(r"reload: .*serving again in", seen)
    assert _call(f"{dev.gateway}/v1/{name}/items/{item['itemId']}") == (200, item)

    page = dev.root / "docs/architecture.md"
    dev.wait_for(lambda: f"<b>{name}</b>" in page.read_text(), f"the map to show {name}")

    seen = len(dev.reloads())
    shutil.rmtree(dev.root / f"services/{name}")
    dev.wait_for_line(rf"stopped {name} \(no longer a service folder\)", seen)
    dev.wait_for(lambda: _call(f"{rest[1]}/healthz")[0] == 0, f"{name}'s REST port closed")
    assert _call(f"{dev.gateway}/v1/products/p_mug")[0] == 200
    # No proto changed, but the services did: the map is drawn again without the package.
    dev.wait_for(lambda: f"<b>{name}</b>" not in page.read_text(), "the map to drop it")


def test_the_dev_loop_bench_runs() -> None:
    """bench/devloop_bench.py, one round (its figures are printed by `make bench`, never
    asserted here): each change was seen and served."""
    done = subprocess.run(
        [sys.executable, "bench/devloop_bench.py", "--rounds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        line.split()[0] for line in done.stdout.splitlines() if line.endswith("(target < 1x: 2 s)")
    }
    assert rows == {"python:", "proto:"}, done.stdout


def test_what_a_save_is(tmp_path: Path) -> None:
    """Editor temp files, generated modules, databases and state are no saves; a temp file
    renamed over the saved one is none either; a service's tests and docs restart nothing."""
    kept = changes.SavedFiles([tmp_path / "gen", tmp_path / ".keel/state"])
    for name in ("service.py", "catalog.proto", "0002_stock.py", "pyproject.toml"):
        assert kept(Change.modified, str(tmp_path / "services/catalog" / name)), name
    for name in (
        ".service.py.swp",
        "service.py~",
        "4913",
        ".#service.py",
        "catalog_pb2.py",
        "catalog_pb2_grpc.pyi",
        "catalog_keel.py",
        "catalog.sqlite3-wal",
        "service.cpython-311.pyc",
    ):
        assert not kept(Change.modified, str(tmp_path / "services/catalog" / name)), name
    assert not kept(Change.modified, str(tmp_path / "gen/acme/catalog/v1/new.py"))
    assert not kept(Change.added, str(tmp_path / ".keel/state/catalog/x.py"))

    (tmp_path / "services").mkdir()
    (tmp_path / "services/service.py").write_text("")
    batch = {
        (Change.added, str(tmp_path / "services/sedX1y2Z3")),  # sed -i: written, renamed over
        (Change.deleted, str(tmp_path / "services/sedX1y2Z3")),
        (Change.modified, str(tmp_path / "services/service.py")),
        (Change.deleted, str(tmp_path / "services/old.py")),  # a real deletion counts
    }
    assert changes.relative(batch, tmp_path) == ["services/old.py", "services/service.py"]

    # A new folder counts with the files in it (written before it was watched: unseen), not
    # the folder itself, nor what the filter ignores in it.
    made = tmp_path / "proto/acme/inventory/v1"
    made.mkdir(parents=True)
    (made / "inventory.proto").write_text("")
    (made / ".inventory.proto.swp").write_text("")
    (made / "__pycache__").mkdir()
    (made / "__pycache__/x.pyc").write_text("")
    batch = {(Change.added, str(tmp_path / "proto/acme")), (Change.added, str(made))}
    assert changes.relative(batch, tmp_path, kept) == ["proto/acme/inventory/v1/inventory.proto"]

    saved = changes.Saved.sort(
        [
            "proto/acme/catalog/v1/catalog.proto",
            "services/catalog/src/catalog/service.py",
            "services/catalog/tests/test_service.py",
            "services/catalog/README.md",
            "tools/keel/keel/runtime/server.py",
        ],
        "services",
    )
    assert saved.protos == ("proto/acme/catalog/v1/catalog.proto",)
    assert saved.code == (
        "services/catalog/src/catalog/service.py",
        "tools/keel/keel/runtime/server.py",
    )
    assert changes.is_keel("tools/keel/keel/runtime/server.py")
    assert not changes.is_keel("services/catalog/src/catalog/service.py")
