"""`keel breaking`: buf's breaking-change check for a workspace that uses Keel's supplied protos.

Both sides are compiled by Keel (the base from a git revision, through `git archive`), so imports
of google/api, buf/validate, ... resolve offline; the rules are the workspace's own (`buf config
ls-breaking-rules`), and Keel's supplied files are never judged.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from keel.toolchain import image
from keel.toolchain import workspace as ws
from keel.toolchain.buf import BufError, run_buf
from keel.toolchain.errors import BuildError

_BUF_GIT = re.compile(r"^(?P<repo>[^#]*\.git)#(?P<params>.*)$")


class BreakingError(Exception):
    """The check could not run (bad revision, protos that do not compile, ...)."""


def git_revision(against: str) -> str:
    """`.git#branch=main` (buf's syntax), `.git#ref=abc`, `.git#tag=v1` or a plain git revision."""
    match = _BUF_GIT.match(against)
    if not match:
        return against
    params = dict(p.split("=", 1) for p in match["params"].split(",") if "=" in p)
    for key in ("ref", "tag", "branch", "commit"):
        if key in params:
            return params[key]
    raise BreakingError(f"{against}: name a branch, tag or ref (e.g. .git#branch=main)")


def _git(args: list[str], cwd: Path) -> bytes:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    if result.returncode != 0:
        raise BreakingError(result.stderr.decode().strip() or f"git {args[0]} failed")
    return result.stdout


def _resolve(revision: str, cwd: Path) -> str:
    for candidate in (revision, f"origin/{revision}"):
        try:
            output = _git(["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], cwd)
            return output.decode().strip()
        except BreakingError:
            continue
    raise BreakingError(f"unknown git revision {revision!r} (a shallow clone? fetch it first)")


def _checkout(workspace: ws.Workspace, revision: str, into: Path) -> Path | None:
    """The workspace as it was at `revision`, extracted under `into`; None if it did not exist."""
    top = Path(_git(["rev-parse", "--show-toplevel"], workspace.root).decode().strip())
    sub = workspace.root.relative_to(top.resolve()).as_posix()
    commit = _resolve(revision, workspace.root)
    spec = commit if sub == "." else f"{commit}:{sub}"
    try:
        archive = _git(["archive", "--format=tar", spec], top)
    except BreakingError:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into if (into / "buf.yaml").is_file() else None


def _config(workspace: ws.Workspace, supplied: frozenset[str]) -> str:
    """The workspace's breaking rules (the union over its modules), never judging Keel's files."""
    rules: set[str] = set()
    for module in workspace.modules:
        listing = run_buf(
            [
                "config",
                "ls-breaking-rules",
                "--configured-only",
                "--format",
                "json",
                "--module-path",
                module.path,
            ],
            workspace.root,
        )
        rules.update(json.loads(line)["id"] for line in listing.splitlines() if line.strip())
    breaking: dict[str, object] = {"use": sorted(rules)}
    if supplied:
        breaking["ignore"] = sorted(supplied)
    return json.dumps({"version": "v2", "breaking": breaking})


@dataclass(frozen=True)
class Finding:
    """One breaking change buf found: where (the file's import path and its path in the
    workspace), buf's rule id (`FIELD_NO_DELETE`) and its message."""

    file: str
    path: str
    line: int
    column: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}:{self.message}"


@dataclass(frozen=True)
class Comparison:
    """The findings, with both sides as compiled (the base is None when it had no workspace)."""

    findings: tuple[Finding, ...]
    base: descriptor_pb2.FileDescriptorSet | None
    head: descriptor_pb2.FileDescriptorSet | None


def _findings(output: str, workspace: ws.Workspace) -> tuple[Finding, ...]:
    """buf's JSON findings; files named by their path in the workspace, as `buf breaking` does."""
    files = {
        name: path.relative_to(workspace.root).as_posix() for name, path in workspace.proto_files
    }
    found = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            raise BreakingError(output) from None
        name = entry.get("path", "")
        found.append(
            Finding(
                file=name,
                path=files.get(name, name),
                line=int(entry.get("start_line", 0)),
                column=int(entry.get("start_column", 0)),
                rule=entry.get("type", ""),
                message=entry.get("message", ""),
            )
        )
    return tuple(found)


def compare(workspace_dir: Path, against: str) -> Comparison:
    """Compare the workspace with `against` (a git revision or buf's `.git#branch=...`).

    Raises BreakingError when the check itself cannot run.
    """
    current = ws.load(workspace_dir)
    with tempfile.TemporaryDirectory(prefix="keel-breaking-") as tmp:
        root = Path(tmp)
        base_dir = _checkout(current, git_revision(against), root / "base")
        if base_dir is None:
            return Comparison((), None, None)
        try:
            base = image.build(ws.load(base_dir))
            head = image.build(current)
        except BuildError as error:
            raise BreakingError(str(error)) from error
        (root / "base.binpb").write_bytes(base.files.SerializeToString())
        (root / "head.binpb").write_bytes(head.files.SerializeToString())
        try:
            config = _config(current, head.supplied | base.supplied)
            run_buf(
                [
                    "breaking",
                    "head.binpb",
                    "--against",
                    "base.binpb",
                    "--config",
                    config,
                    "--error-format",
                    "json",
                ],
                root,
            )
        except BufError as error:
            if error.exit_code != 100:
                raise BreakingError(str(error)) from error
            return Comparison(_findings(str(error), current), base.files, head.files)
    return Comparison((), base.files, head.files)


def check(workspace_dir: Path, against: str) -> str:
    """Compare the workspace with `against`; buf's findings, one per line ("" if none)."""
    return "\n".join(str(f) for f in compare(workspace_dir, against).findings)
