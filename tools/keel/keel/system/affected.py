"""Which service packages a change touches, from the paths it changes (`keel affected`).

A package is touched by its own folder, by a proto file of a service it serves, calls or
subscribes to (or by any proto such a file imports), and by Keel itself: tools/, the lock file,
the Makefile, buf.yaml, the registry. Generated code counts as the proto it came from; docs and
everything else touch nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from keel.system.contracts import Contracts
from keel.system.packages import Package

KEEL_ITSELF = (
    "tools/",
    "pyproject.toml",
    "requirements.lock",
    "Makefile",
    "buf.yaml",
    "services/registry.toml",
    ".ci/",
)
_GENERATED = ("_pb2_grpc.pyi", "_pb2_grpc.py", "_pb2.pyi", "_pb2.py", "_keel.py", "_keel.pyi")
_FOLLOWS = ("asyncapi.json", ".keel-gen.json", "system.mmd")
"""Generated files that change with every proto change (the proto's own path touches)."""


def is_keel_itself(path: str) -> bool:
    """Whether `path` (relative to the repository's root) is Keel itself: every service is
    touched by it."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in KEEL_ITSELF)


class GitError(Exception):
    """git could not list the changes (an unknown revision, not a repository)."""


def changed_paths(root: Path, since: str) -> list[str]:
    """Paths changed since the merge base of `since` and HEAD: committed, staged, unstaged and
    untracked (in CI, a clean checkout of the pull request: its commits)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], check=False, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise GitError(done.stderr.strip() or f"git {' '.join(args)} failed")
        return done.stdout

    base = git("merge-base", since, "HEAD").strip()
    paths = set(git("diff", "--name-only", base).splitlines())
    paths |= set(git("ls-files", "--others", "--exclude-standard").splitlines())
    return sorted(p for p in paths if p)


def _proto_of(path: str, contracts: Contracts, gen_dir: str) -> str | None:
    """The workspace import path a changed file stands for: a proto, or code generated from one."""
    for name, file in contracts.files.items():
        if file.as_posix() == path:
            return name
    if path.startswith(f"{gen_dir}/"):
        generated = path[len(gen_dir) + 1 :]
        suffixes = (".json",) if generated.startswith("openapi/") else _GENERATED
        generated = generated.removeprefix("openapi/")
        for suffix in suffixes:
            if generated.endswith(suffix):
                proto = generated.removesuffix(suffix) + ".proto"
                return proto if proto in contracts.imports else None
    return None


def affected(
    paths: Iterable[str], contracts: Contracts, packages: list[Package], gen_dir: str = "gen"
) -> dict[str, list[str]]:
    """Package name → why it is touched (one reason per path that touches it), for the packages
    touched by the changed `paths` (relative to the repository's root)."""
    reasons: dict[str, list[str]] = {}

    def touch(package: Package, why: str) -> None:
        reasons.setdefault(package.name, []).append(why)

    for path in paths:
        if is_keel_itself(path):
            for package in packages:
                touch(package, f"{path}: Keel itself")
            continue
        owner = next((p for p in packages if path.startswith(f"{p.folder.as_posix()}/")), None)
        if owner is not None:
            touch(owner, f"{path}: its own code")
            continue
        proto = _proto_of(path, contracts, gen_dir)
        if proto is None:
            unknown = path.startswith(f"{gen_dir}/") and path[len(gen_dir) + 1 :] not in _FOLLOWS
            if unknown or (path.endswith(".proto") and path.startswith("proto/")):
                for package in packages:  # who uses it is unknown: everyone, to be safe
                    touch(package, f"{path}: generated or proto, of no proto in the workspace")
            continue
        files = contracts.importers(proto)
        services = {s.full_name for s in contracts.services.values() if s.proto in files}
        events = {e for s in contracts.services.values() if s.proto in files for e in s.publishes}
        events |= {e for e, declared in contracts.events.items() if declared in files}
        for package in packages:
            if services & set(package.serves):
                touch(package, f"{path}: a contract it serves")
            elif services & set(package.calls):
                touch(package, f"{path}: a contract it calls")
            elif any(
                events & set(contracts.services[s].subscribes)
                for s in package.serves
                if s in contracts.services
            ):
                touch(package, f"{path}: events it subscribes to")
    return dict(sorted(reasons.items()))
