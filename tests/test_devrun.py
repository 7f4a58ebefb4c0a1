"""`keel dev` (what `make run` starts): the example services together, stopped by Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nats
from acme.orders.v1 import orders_keel, orders_pb2
from keel.events.broker import start_broker
from keel.runtime.config import Settings

from tests import devprocess
from tests.conftest import BIN, REPO
from tests.devprocess import SERVICES


async def _units_sold_reach(url: str, units: int) -> None:
    """Wait until the product at `url` (REST) shows `units` sold."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while True:
        body = await asyncio.to_thread(lambda: direct.open(url, timeout=5).read())
        sold = int(json.loads(body).get("unitsSold", 0))
        if sold == units:
            return
        assert time.monotonic() < deadline, f"units sold {sold}, not {units}"
        await asyncio.sleep(0.05)


async def _no_dead_letters_says_the_cli(state: Path) -> None:
    """The README's `keel events dlq catalog` finds the broker keel dev runs on `state`."""
    dlq = await asyncio.to_thread(_keel, "events", "dlq", "catalog", "--state-dir", str(state))
    assert (dlq.returncode, dlq.stdout) == (0, ""), dlq.stderr
    assert "0 dead letter(s) of acme.catalog.v1.CatalogService" in dlq.stderr


def _check_state(output: str, state: Path) -> None:
    """Each service had its own state folder under `state`; catalog's database was migrated
    before it served. keel dev started its broker first, storing in `state`/nats, told its
    address, and stopped it at the end."""
    assert (state / "catalog" / "catalog.sqlite3").is_file()
    catalog = [line for line in output.splitlines() if "catalog\x1b[0m │" in line]
    migrated = next(i for i, line in enumerate(catalog) if "database at revision" in line)
    assert migrated < next(i for i, line in enumerate(catalog) if "serving" in line), output
    broker = re.search(r"keel dev: NATS broker nats://127\.0\.0\.1:(\d+) ", output)
    assert broker, output
    assert output.index("NATS broker") < output.index("serving")
    assert f"events: NATS JetStream nats://127.0.0.1:{broker[1]}" in output
    assert (state / "nats" / "jetstream").is_dir()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(broker[1]))) != 0  # nothing listens there now
    assert "Traceback" not in output


async def _events_kept(state: Path) -> int:
    """The events in orders' stream of a broker started again on keel dev's store."""
    broker = await asyncio.to_thread(start_broker, state / "nats")
    try:
        nc = await nats.connect(broker.url)
        try:
            info = await nc.jetstream().stream_info(orders_keel.ORDER_PLACED.stream)
            return int(info.state.messages)
        finally:
            await nc.close()
    finally:
        await asyncio.to_thread(broker.stop)


async def test_keel_dev_runs_the_services_until_interrupted(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    ports = [devprocess.free_pair() for _ in SERVICES]
    gateway = devprocess.free_pair()
    lines = [f'"{name}" = "127.0.0.1:{port}"' for name, port in zip(SERVICES, ports, strict=True)]
    registry.write_text("[targets]\n" + "\n".join(lines) + "\n")
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen(  # a real process: it must stop all three on SIGINT
        [
            *(str(BIN / "keel"), "dev", "--registry", str(registry)),
            *("--gateway-port", str(gateway), "--state-dir", str(tmp_path / "state")),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
    )
    try:
        deadline = time.monotonic() + 60
        while (tmp_path / "dev.log").read_text().count("serving") < 4:  # 3 and the gateway
            assert process.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, "services did not start"
            await asyncio.sleep(0.1)
        settings = Settings(registry=str(registry))
        async with orders_keel.OrderServiceClient.connect(settings=settings) as orders:
            reply = await orders.create_order(
                orders_pb2.CreateOrderRequest(
                    customer_id="c_1",
                    lines=[orders_pb2.OrderLine(product_id="p_mug", quantity=2)],
                    payment_method_token="tok_visa",
                )
            )
        assert reply.order.state == orders_pb2.ORDER_STATE_CONFIRMED
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{gateway}/v1/orders/{reply.order.order_id}"
        for _ in range(100):  # the gateway may still be starting
            try:
                body = await asyncio.to_thread(lambda: direct.open(url, timeout=5).read())
                break
            except urllib.error.URLError:
                await asyncio.sleep(0.1)
        assert json.loads(body)["order"]["state"] == "ORDER_STATE_CONFIRMED"
        # The URLs keel dev prints work: the curl line and the API docs.
        printed = (tmp_path / "dev.log").read_text()
        curl = re.search(r"try: curl (\S+)", printed)
        docs = re.search(r"API docs (\S+)", printed)
        assert curl, printed
        assert docs, printed
        product = await asyncio.to_thread(lambda: direct.open(curl[1], timeout=5).read())
        assert json.loads(product)["title"] == "Mug"
        # The order's OrderPlaced went through the broker keel dev started into catalog's
        # read model (eventually).
        await _units_sold_reach(curl[1], 2)
        page = await asyncio.to_thread(lambda: direct.open(docs[1], timeout=5))
        assert page.headers["content-type"].startswith("text/html")
        await _no_dead_letters_says_the_cli(tmp_path / "state")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        log.close()
    output = (tmp_path / "dev.log").read_text()
    assert output.rstrip().endswith("keel dev: stopped")
    for name in ("catalog", "orders", "payments"):
        assert f"{name}\x1b[0m │" in output  # each service's lines carry its colored name
    assert output.count("stopped") >= 4  # three services drained, then keel dev
    assert f"REST gateway http://127.0.0.1:{gateway}" in output
    _check_state(output, tmp_path / "state")
    assert not (tmp_path / "state" / "nats" / "url").exists()  # no broker runs there now
    assert await _events_kept(tmp_path / "state") == 1  # the OrderPlaced, for the next run


def _keel_dev_to_the_end(registry: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """`keel dev` with `registry` and `state`, for a start that ends by itself."""
    gateway = str(devprocess.free_pair())
    return _keel(
        *("dev", "--registry", str(registry), "--gateway-port", gateway, "--state-dir", str(state))
    )


def _keel(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`keel ARGUMENTS` from the repository's root without KEEL_ settings, run to its end."""
    return subprocess.run(
        [str(BIN / "keel"), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        check=False,
    )


def test_keel_dev_on_ports_in_use_says_so_and_starts_nothing(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    ports = [devprocess.free_pair() for _ in SERVICES]
    lines = [f'"{name}" = "127.0.0.1:{port}"' for name, port in zip(SERVICES, ports, strict=True)]
    registry.write_text("[targets]\n" + "\n".join(lines) + "\n")
    with socket.socket() as holder:  # as a keel dev already running holds them
        holder.bind(("127.0.0.1", ports[1]))
        holder.listen()
        done = _keel_dev_to_the_end(registry, tmp_path / "state")
    assert done.returncode == 1, done.stdout
    assert f"keel dev: port {ports[1]} in use on 127.0.0.1" in done.stdout
    assert "NATS broker" not in done.stdout  # nothing started: no second broker on the store
    assert not (tmp_path / "state").exists()
    assert "Traceback" not in done.stdout + done.stderr


def test_a_service_that_cannot_migrate_stops_keel_dev(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    lines = [f'"{name}" = "127.0.0.1:{devprocess.free_pair()}"' for name in SERVICES]
    registry.write_text("[targets]\n" + "\n".join(lines) + "\n")
    broken = tmp_path / "state" / "catalog" / "catalog.sqlite3"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a database, " * 512)
    done = _keel_dev_to_the_end(registry, tmp_path / "state")
    assert done.returncode == 1, done.stdout
    assert "keel: catalog: cannot migrate its database: file is not a database" in done.stdout
    assert "keel dev: catalog exited early; stopped the others" in done.stdout
    assert "REST gateway" not in done.stdout  # it never started
    assert "Traceback" not in done.stdout
    assert not done.stderr


def _until_all_serve(launched: devprocess.Launched) -> None:
    """Wait until keel dev says everything serves (its last start-up line)."""
    deadline = time.monotonic() + 90
    while "Ctrl-C stops them all" not in launched.log.read_text():
        assert launched.process.poll() is None, launched.log.read_text()
        assert time.monotonic() < deadline, launched.log.read_text()
        time.sleep(0.05)  # polling for the condition, not waiting a fixed time


def test_ctrl_c_in_a_terminal_stops_the_services_then_the_broker(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole process group: the services drain, and the broker
    (in a session of its own) is stopped after them, so none of them loses it on the way."""
    launched = devprocess.launch(tmp_path, group=True)
    process = launched.process
    try:
        _until_all_serve(launched)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, launched.log.read_text()
    finally:
        process.kill()
        process.wait(timeout=30)
    output = launched.log.read_text()
    assert output.rstrip().endswith("keel dev: stopped"), output
    assert "broker error" not in output, output
    assert "broker disconnected" not in output, output


def test_nothing_outlives_keel_dev_killed(tmp_path: Path) -> None:
    """SIGKILL leaves keel dev no time to stop anything: the services, the gateway and the
    broker stop anyway (keel.dev.tether), and free their ports."""
    launched = devprocess.launch(tmp_path)
    process = launched.process
    try:
        _until_all_serve(launched)
        started = devprocess.descendants(process.pid)
        assert len(started) >= 5, started  # three services, the gateway, nats-server
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 60
        while left := [pid for pid in started if devprocess.alive(pid)]:
            assert time.monotonic() < deadline, f"still running after keel dev died: {left}"
            time.sleep(0.05)
        ports = [
            int(line.rsplit(":", 1)[1].strip('"'))
            for line in launched.registry.read_text().splitlines()
            if ":" in line
        ]
        while held := devprocess.listening({*ports, launched.port}):  # nobody serves on them
            assert time.monotonic() < deadline, f"ports still listened on: {held}"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait(timeout=30)
