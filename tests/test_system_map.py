"""`keel graph` and `keel affected` on this repository: the map drawn from the protos and the
services' code, the page it keeps current, and the services a change touches."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from keel.system import affected, consumers, contracts, graph, packages

ROOT = Path(__file__).resolve().parents[1]
KEEL = [sys.executable, "-m", "keel.cli"]


@pytest.fixture(scope="module")
def system() -> tuple[contracts.Contracts, list[packages.Package]]:
    found = contracts.load(ROOT)
    return found, packages.discover(ROOT, found)


def test_the_map_has_the_shops_calls_and_events(
    system: tuple[contracts.Contracts, list[packages.Package]],
) -> None:
    found, discovered = system
    by_name = {p.name: p for p in discovered}
    assert by_name["orders"].serves == ("acme.orders.v1.OrderService",)
    calls = by_name["orders"].calls
    assert {"ReserveStock", "ReleaseStock"} <= set(calls["acme.catalog.v1.CatalogService"])
    assert "AuthorizePayment" in calls["acme.payments.v1.PaymentService"]
    assert by_name["catalog"].calls == {}  # catalog calls no one: it follows orders' events
    section = graph.render(found, discovered, consumers.usage(found, discovered))
    orders_row = next(line for line in section.splitlines() if line.startswith("| orders |"))
    assert "CatalogService.ReserveStock" in orders_row
    assert "ReserveStockResponse: " in orders_row
    assert '  n_orders -->|"' in section
    assert "OrderPlaced" in section.split("n_orders -. ")[1].split(".-> n_catalog")[0]
    assert section.startswith(graph.BEGIN)
    assert section.rstrip().endswith(graph.END)


def test_the_architecture_page_is_current() -> None:
    """`make gen` writes docs/architecture.md; a stale page fails here as in CI."""
    done = subprocess.run(
        [*KEEL, "graph", "--check", "docs/architecture.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_stale_page_is_named_and_rewritten_keeping_its_prose(tmp_path: Path) -> None:
    page = tmp_path / "architecture.md"
    page.write_text(f"# Ours\n\nProse.\n\n{graph.BEGIN}\nold\n{graph.END}\n\nAfter.\n")
    check = [*KEEL, "graph", "--workspace", str(ROOT), "--check", str(page)]
    stale = subprocess.run(check, capture_output=True, text=True, check=False)
    assert stale.returncode == 1
    assert "is stale: run 'make gen'" in stale.stderr
    wrote = [*KEEL, "graph", "--workspace", str(ROOT), "--write", str(page)]
    subprocess.run(wrote, check=True, capture_output=True)
    text = page.read_text()
    assert text.startswith("# Ours\n\nProse.\n\n")
    assert text.endswith("\nAfter.\n")
    assert "old" not in text
    assert "acme.orders.v1.OrderService" in text
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0


SHOP = {"catalog", "orders", "payments"}
EVERY = {"(every service)"}
"""Every service folder of the workspace: the shop's and any other (`keel new service`)."""


@pytest.mark.parametrize(
    ("path", "touched"),
    [
        ("services/payments/src/payments/domain.py", {"payments"}),
        ("proto/acme/catalog/v1/catalog.proto", {"catalog", "orders"}),
        ("gen/acme/catalog/v1/catalog_pb2.py", {"catalog", "orders"}),
        ("gen/openapi/acme/catalog/v1/catalog.json", {"catalog", "orders"}),
        ("gen/asyncapi.json", set()),
        ("gen/acme/payments/v1/payments_pb2_grpc.pyi", {"payments", "orders", "(catalog)"}),
        ("gen/acme/gone/v1/gone_pb2.py", EVERY),
        ("proto/acme/payments/v1/payments.proto", {"payments", "orders", "(catalog)"}),
        ("proto/acme/orders/v1/orders.proto", {"orders", "catalog"}),  # catalog subscribes
        ("tools/keel/keel/errors.py", EVERY),
        ("requirements.lock", EVERY),
        ("proto/acme/gone/v1/gone.proto", EVERY),
        ("docs/events.md", set()),
        ("README.md", set()),
    ],
)
def test_what_a_change_touches(
    system: tuple[contracts.Contracts, list[packages.Package]], path: str, touched: set[str]
) -> None:
    found, discovered = system
    everyone = {p.name for p in discovered}
    assert everyone >= SHOP
    if "(catalog)" in touched:  # orders.proto imports payments.proto: its events may change
        imports = found.imports["acme/orders/v1/orders.proto"]
        touched = (touched - {"(catalog)"}) | (
            {"catalog"} if "acme/payments/v1/payments.proto" in imports else set()
        )
    reasons = affected.affected([path], found, discovered)
    if touched == EVERY:
        assert set(reasons) == everyone
    elif path.startswith(("proto/acme/", "gen/acme/", "gen/openapi/acme/")):
        # A shop's contract: among the shop's services, exactly these; another service of the
        # workspace only as one that calls it or subscribes to its events.
        assert set(reasons) & SHOP == touched
        for name in set(reasons) - SHOP:
            uses = ("a contract it calls", "events it subscribes to")
            assert all(why.endswith(uses) for why in reasons[name]), (name, reasons[name])
    else:  # a service's own code, or what no service uses: no other service is touched
        assert set(reasons) == touched


def _documented_example() -> tuple[list[str], str]:
    """The `keel affected` example of docs/architecture.md: its arguments and its output."""
    text = (ROOT / "docs/architecture.md").read_text()
    block = text.split("```console\n$ keel affected ", 1)[1].split("```", 1)[0]
    command, _, output = block.partition("\n")
    return command.split(), output


def test_keel_affected_reads_git_including_uncommitted_work(tmp_path: Path) -> None:
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # The documented example's REF is main: here, the commit cloned (a clone has no main when
    # this repository is on another branch).
    subprocess.run(["git", "-C", str(clone), "update-ref", "refs/heads/main", "HEAD"], check=True)
    proto = clone / "proto/acme/catalog/v1/catalog.proto"
    proto.write_text(proto.read_text() + "\n// A comment.\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KEEL, "affected", "--workspace", str(clone), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    arguments, output = _documented_example()
    documented = run(*arguments)
    assert (documented.returncode, documented.stdout) == (0, output), documented.stderr
    (clone / "services/payments/src/payments/notes.py").write_text('"""Untracked."""\n')

    listed = run("--since", "HEAD")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["catalog", "orders", "payments"]
    assert run("--since", "HEAD", "--paths").stdout.split() == [
        "services/catalog",
        "services/orders",
        "services/payments",
    ]
    why = run("--since", "HEAD", "--why").stdout
    assert "services/payments/src/payments/notes.py: its own code" in why
    assert "proto/acme/catalog/v1/catalog.proto: a contract it calls" in why
    unknown = run("--since", "no-such-ref")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("keel affected: ")


def test_node_ids_are_one_per_name_and_never_a_mermaid_keyword() -> None:
    names = ["acme.end.v1", "acme.end_v1", "acme_end.v1", "end", "9lives", "a.b", "a_b", "a_2e_b"]
    ids = [graph._id(name) for name in names]
    assert len(set(ids)) == len(names)
    assert all(re.fullmatch(r"n_[A-Za-z0-9_]+", node) for node in ids)
