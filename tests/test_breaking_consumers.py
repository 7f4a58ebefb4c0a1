"""Consumer contracts in `keel breaking`: a breaking change names the consumer services it hits
and what of theirs it touches; a deprecated field that no consumer uses may be retired (its
number reserved). Real git repositories, real buf, service packages read from their code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from keel.system import consumers, contracts, packages

from tests.conftest import REPO, keel, write_workspace

INVENTORY = """syntax = "proto3";
package inv.v1;
message Item {
  string sku = 1;
  int32 count = 2;
  string old_code = 3 [deprecated = true];
  string legacy_note = 4 [deprecated = true];
  Place place = 5;
}
message Place {
  string aisle = 1;
  string shelf = 2;
}
message GetItemRequest { string sku = 1; }
service InventoryService {
  rpc GetItem(GetItemRequest) returns (Item);
  rpc CountItems(GetItemRequest) returns (Item);
}
"""

SHOP = """syntax = "proto3";
package shopfront.v1;
message Hello { string text = 1; }
service ShopService {
  rpc Greet(Hello) returns (Hello);
}
"""

SHOP_CODE = '''"""The shop front: asks inventory for an item."""
from inv.v1.inventory_keel import InventoryServiceClient
from inv.v1 import inventory_pb2


async def stocked(client: InventoryServiceClient, sku: str) -> str:
    item = await client.get_item(inventory_pb2.GetItemRequest(sku=sku))
    return f"{item.count} {item.legacy_note} in aisle {item.place.aisle}"
'''


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = write_workspace(
        tmp_path / "repo",
        {
            "proto/inv/v1/inventory.proto": INVENTORY,
            "proto/shopfront/v1/shop.proto": SHOP,
            "services/shop/pyproject.toml": (
                '[project]\nname = "shop"\n\n[tool.keel]\nserves = ["shopfront.v1.ShopService"]\n'
            ),
            "services/shop/src/shop/__init__.py": "",
            "services/shop/src/shop/front.py": SHOP_CODE,
        },
    )
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    return root


def _edit(repo: Path, old: str, new: str) -> None:
    proto = repo / "proto/inv/v1/inventory.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new))


def _breaking(repo: Path) -> subprocess.CompletedProcess[str]:
    return keel("breaking", "--workspace", repo, "--against", "main", cwd=repo)


def test_what_a_consumer_uses_is_read_from_its_code(repo: Path) -> None:
    found = contracts.load(repo)
    used = consumers.usage(found, packages.discover(repo, found))["shop"]
    assert used.rpcs == {("inv.v1.InventoryService", "GetItem")}
    assert {
        ("inv.v1.Item", "count"),
        ("inv.v1.Item", "legacy_note"),
        ("inv.v1.Item", "place"),
        ("inv.v1.Place", "aisle"),
        ("inv.v1.GetItemRequest", "sku"),
    } <= used.fields
    assert ("inv.v1.Item", "old_code") not in used.fields
    assert ("inv.v1.Place", "shelf") not in used.fields


def test_a_breaking_change_names_the_consumer_it_hits(repo: Path) -> None:
    _edit(repo, "  string legacy_note = 4 [deprecated = true];\n", "  reserved 4;\n")
    result = _breaking(repo)
    assert result.returncode == 100, result.stdout + result.stderr
    assert 'with name "legacy_note" on message "Item" was deleted' in result.stdout
    assert "breaks consumer shop: it uses inv.v1.Item.legacy_note" in result.stdout


def test_a_nested_field_and_an_rpc_name_their_consumer(repo: Path) -> None:
    _edit(repo, "  string aisle = 1;\n", "  int32 aisle = 1;\n")
    _edit(repo, "  rpc GetItem(GetItemRequest) returns (Item);\n", "")
    out = _breaking(repo).stdout
    assert "breaks consumer shop: it uses inv.v1.Place.aisle" in out
    assert "breaks consumer shop: it uses inv.v1.InventoryService.GetItem" in out


def test_a_change_no_consumer_uses_still_fails_but_says_so(repo: Path) -> None:
    _edit(repo, "  rpc CountItems(GetItemRequest) returns (Item);\n", "")
    result = _breaking(repo)
    assert result.returncode == 100
    assert "no consumer in this repository uses it (clients outside it may)" in result.stdout


def test_a_deprecated_unused_field_is_retired_once_its_number_is_reserved(repo: Path) -> None:
    _edit(repo, "  string old_code = 3 [deprecated = true];\n", "")
    unreserved = _breaking(repo)
    assert unreserved.returncode == 100
    assert "deprecated and unused: reserve 3 (and its name) to retire it" in unreserved.stdout
    reserved = '  reserved 3;\n  reserved "old_code";\n'
    _edit(repo, "  string legacy_note", f"{reserved}  string legacy_note")
    retired = _breaking(repo)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert "allowed: deprecated, its number reserved, and no consumer uses it" in retired.stdout


def test_an_undeprecated_unused_field_is_not_retired(repo: Path) -> None:
    _edit(repo, "  string shelf = 2;\n", "  reserved 2;\n")
    result = _breaking(repo)
    assert result.returncode == 100
    assert "no consumer in this repository uses it" in result.stdout


def test_the_documented_example_on_the_shop(tmp_path: Path) -> None:
    """docs/proto-workflow.md's example, on a clone of this repository: deleting the field
    payments' Payment.decline_reason names orders, which reads it."""
    docs = (REPO / "docs/proto-workflow.md").read_text()
    example = docs.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    finding, consumer = example
    clone = tmp_path / "shop"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    proto = clone / "proto/acme/payments/v1/payments.proto"
    lines = proto.read_text().splitlines(keepends=True)
    kept = [line for line in lines if "string decline_reason = 6" not in line]
    assert len(kept) == len(lines) - 1
    proto.write_text("".join(kept))
    result = keel("breaking", "--workspace", clone, "--against", "HEAD", cwd=clone)
    assert result.returncode == 100, result.stdout + result.stderr
    path, _line, _column, message = finding.split(":", 3)
    reported = result.stdout.splitlines()
    at = next(i for i, line in enumerate(reported) if line.endswith(message))
    assert reported[at].startswith(f"{path}:")
    assert reported[at + 1] == consumer
