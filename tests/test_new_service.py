"""`keel new service NAME`, as a user runs it: in a clone of this repository, `keel new service
inventory` (another name if the workspace has an inventory already), then `make gen`; the static
checks (`make check lint`: ruff, mypy --strict, import-linter, buf lint, the architecture page)
pass on the whole repository with the new service in it, the new service's own tests pass
(SQLite and PostgreSQL), its models and its first migration agree (`keel db check`), and `keel
dev` (what `make run` runs) serves its REST route through the gateway. The rest of `make test`
is the suite this test belongs to, which the new files do not change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests import devprocess
from tests.conftest import BIN, REPO, answers, registry_ports, unused_service_name

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_NEW = unused_service_name("inventory")
"""The new service's name: inventory, as docs/services.md has it, unless the workspace has one
(a user who followed the README): then inventory2, and so on."""
_SERVICE = f"acme.{_NEW}.v1.{_NEW.capitalize()}Service"
_TAKEN = min(registry_ports())
"""A port the registry gives a service already."""


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEEL_", "OTEL_", "VIRTUAL_ENV", "PYTHONPATH"))
    }


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["orders"], "services/orders exists already"),
        (["Inventory"], "is not a valid service name"),
        (["in-ventory"], "is not a valid service name"),
        (["json"], "standard-library module"),
        (["class"], "Python keyword"),
        (["acme"], "top-level package of the generated code"),
        (["sqlalchemy"], "importable package already"),
        ([_NEW, "--port", str(_TAKEN)], f"port {_TAKEN} is taken"),
    ],
)
def test_a_name_that_cannot_be_a_service_is_refused_saying_why(args: list[str], says: str) -> None:
    registered = [REPO / "services/registry.toml", REPO / "pyproject.toml"]
    before = [path.read_text() for path in registered]
    existed = (REPO / "services" / args[0]).exists()
    done = _run([str(BIN / "keel"), "new", "service", *args], REPO)
    assert done.returncode == 2
    assert done.stderr.startswith("keel new service: ")
    assert says in done.stderr
    assert [path.read_text() for path in registered] == before  # nothing registered
    assert (REPO / "services" / args[0]).exists() == existed  # nothing left half-made
    assert not list((REPO / "proto").glob(f"*/{args[0]}/v1/{args[0]}.proto")) or existed


def test_a_new_service_is_tested_checked_and_served(tmp_path: Path) -> None:
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    installed = _run(["make", "--no-print-directory", "install"], clone)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    keel = str(clone / ".venv/bin/keel")

    made = _run([keel, "new", "service", _NEW], clone)
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"{_SERVICE} on port" in made.stdout
    assert (clone / f"proto/acme/{_NEW}/v1/{_NEW}.proto").is_file()
    migrations = [m.name for m in (clone / f"services/{_NEW}/migrations/versions").glob("*.py")]
    assert len(migrations) == 1, migrations
    assert migrations[0].endswith(f"_create_{_NEW}_tables.py"), migrations
    assert " --> " not in made.stdout + made.stderr  # no lint report of the new migration
    assert f'"{_SERVICE}"' in (clone / "services/registry.toml").read_text()

    for step in (
        ["make", "--no-print-directory", "gen"],
        ["make", "--no-print-directory", "check", "lint"],
    ):
        done = _run(step, clone)
        assert done.returncode == 0, (step, done.stdout[-4000:], done.stderr[-4000:])

    tests = _run(
        [str(clone / ".venv/bin/pytest"), "-q", "-p", "no:cacheprovider", f"services/{_NEW}"],
        clone,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout
    assert "failed" not in tests.stdout

    for action in ("upgrade", "check"):  # its first migration creates what its models say
        done = _run([keel, "db", action, _NEW], clone)
        assert done.returncode == 0, done.stdout + done.stderr

    registry = tmp_path / "registry.toml"
    services = [
        line.split("=")[0].strip()
        for line in (clone / "services/registry.toml").read_text().splitlines()
        if line.startswith('"')
    ]
    assert f'"{_SERVICE}"' in services
    registry.write_text(
        "[targets]\n" + "".join(f'{s} = "127.0.0.1:{devprocess.free_pair()}"\n' for s in services)
    )
    port = devprocess.free_pair()
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(
            [
                *(keel, "dev", "--registry", str(registry)),
                *("--gateway-port", str(port), "--state-dir", str(tmp_path / "state")),
            ],
            cwd=clone,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("serving") < len(services) or not answers(f"{url}/healthz"):
            assert dev.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.05)  # polling for the condition, not waiting a fixed time
        item = devprocess.new_item(url, name=_NEW)
        assert item["title"] == "first"
        assert item["itemId"].startswith("it_")
        got = _DIRECT.open(f"{url}/v1/{_NEW}/items/{item['itemId']}", timeout=30)
        assert json.loads(got.read()) == item
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        finally:
            dev.kill()
