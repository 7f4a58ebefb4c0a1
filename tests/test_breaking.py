"""`keel breaking` / `make breaking`: real git repos, real buf breaking."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, keel, write_workspace

BASE = """syntax = "proto3";
package shop.v1;
import "google/api/annotations.proto";
message Item {
  string id = 1;
  int32 count = 2;
}
message GetItemRequest { string id = 1; }
service ItemService {
  rpc GetItem(GetItemRequest) returns (Item) {
    option (google.api.http) = {get: "/v1/items/{id}"};
  }
}
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = write_workspace(tmp_path / "repo", {"proto/shop/v1/shop.proto": BASE})
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    _git(root, "checkout", "-q", "-b", "feature")
    return root


def _change(repo: Path, old: str, new: str) -> None:
    proto = repo / "proto/shop/v1/shop.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  int32 count = 2;\n", "", 'Previously present field "2" with name "count"'),
        ("int32 count = 2;", "string count = 2;", 'changed type from "int32" to "string"'),
        ("rpc GetItem(", "rpc FetchItem(", 'Previously present RPC "GetItem"'),
        (
            "package shop.v1;",
            "package store.v1;",
            'File package changed from "shop.v1" to "store.v1"',
        ),
    ],
    ids=["delete-field", "change-field-type", "rename-rpc", "change-package"],
)
def test_breaking_change_fails_naming_it(repo: Path, old: str, new: str, expected: str) -> None:
    _change(repo, old, new)
    result = keel("breaking", "--workspace", repo, "--against", ".git#branch=main", cwd=repo)
    assert result.returncode == 100, result.stdout + result.stderr
    assert "proto/shop/v1/shop.proto:" in result.stdout
    assert expected in result.stdout


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  int32 count = 2;\n", "  int32 count = 2;\n  string note = 3;\n"),
        (
            "service ItemService {\n",
            "service ItemService {\n  rpc ListItems(GetItemRequest) returns (Item);\n",
        ),
    ],
    ids=["new-field", "new-rpc"],
)
def test_compatible_change_passes(repo: Path, old: str, new: str) -> None:
    _change(repo, old, new)
    result = keel("breaking", "--workspace", repo, "--against", "main", cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no breaking changes" in result.stdout


def test_committed_change_is_compared_too(repo: Path) -> None:
    _change(repo, "int32 count = 2;", "int64 count = 2;")
    _git(repo, "commit", "-qam", "widen count")
    result = keel("breaking", "--workspace", repo, "--against", ".git#branch=main", cwd=repo)
    assert result.returncode == 100
    assert 'changed type from "int32" to "int64"' in result.stdout


def test_unknown_revision_is_a_clear_error(repo: Path) -> None:
    result = keel("breaking", "--workspace", repo, "--against", "no-such-branch", cwd=repo)
    assert result.returncode == 2
    assert "unknown git revision 'no-such-branch'" in result.stderr


def test_make_breaking_uses_base(tmp_path: Path) -> None:
    """`make breaking BASE=...` in this repository: HEAD against itself has nothing to report."""
    result = subprocess.run(
        ["make", "--no-print-directory", "breaking", "BASE=HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no breaking changes against HEAD" in result.stdout
