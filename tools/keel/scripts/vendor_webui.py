"""Fetch the docs page's browser files (keel/gateway/webui/) from npm at their pinned versions.

The pins are `keel/gateway/webui/vendor.json`: each npm package's version, its registry
integrity (sha512 of the tarball) and the files the page needs. For each package this runs
`npm pack <name>@<version>`, checks the tarball against the pinned integrity (npm's
`dist.integrity`), and writes the listed files, flattened, into `webui/<package>/` (`@scope/name`
as `scope-name`), replacing what was there. `--check` writes nothing and fails when a shipped
file differs from the tarball's. `make webui` runs it.

To move to another version: set `version` and `integrity` (`npm view <name>@<version>
dist.integrity`) in vendor.json, run `make webui`, and update webui/README.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from keel.gateway.assets import WEBUI, folder


def integrity(data: bytes) -> str:
    """npm's integrity string (Subresource Integrity, sha512) of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(name: str, version: str, folder: Path) -> bytes:
    """The tarball of `name@version`, packed by npm into `folder`."""
    done = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", str(folder)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"vendor_webui: npm pack {name}@{version} failed:\n{done.stderr}")
    filename: str = json.loads(done.stdout)[0]["filename"]
    return (folder / filename).read_bytes()


def members(tarball: bytes, files: list[str]) -> dict[str, bytes]:
    """The listed files of an npm tarball (paths relative to its `package/` folder)."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name in files:
            member = archive.extractfile(f"package/{name}")
            if member is None:
                raise SystemExit(f"vendor_webui: {name} is not a file in the tarball")
            found[Path(name).name] = member.read()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    pins = json.loads((WEBUI / "vendor.json").read_text())
    stale = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, pin in pins.items():
            tarball = fetch(name, pin["version"], Path(scratch))
            if integrity(tarball) != pin["integrity"]:
                print(f"vendor_webui: {name}@{pin['version']}: integrity mismatch", file=sys.stderr)
                return 1
            target = WEBUI / folder(name)
            files = members(tarball, pin["files"])
            if args.check:
                shipped = {p.name: p.read_bytes() for p in target.glob("*")}
                stale += [f"{target.name}/{f}" for f in files if shipped.get(f) != files[f]]
                stale += [
                    f"{target.name}/{f} (not in the package)" for f in shipped.keys() - files.keys()
                ]
                continue
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for filename, data in files.items():
                (target / filename).write_bytes(data)
            print(f"vendor_webui: {name}@{pin['version']} -> {target} ({len(files)} files)")
    if not args.check:
        (WEBUI / SUMS).write_text(checksums())
    elif (WEBUI / SUMS).read_text() != checksums():
        stale.append(f"{SUMS} (run make webui)")
    if stale:
        print("vendor_webui: stale: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


SUMS = "SHA256SUMS"
"""The sha256 of every shipped file (`sha256sum -c` reads it): checked offline by the tests."""


def checksums() -> str:
    """`SUMS`'s text for the files under WEBUI's package folders, as `sha256sum` writes it."""
    shipped = sorted(p for p in WEBUI.glob("*/*") if p.is_file())
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(WEBUI)}" for p in shipped
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
