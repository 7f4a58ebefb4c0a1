"""The docs page's browser files, shipped in keel/gateway/webui/ (no CDN: `/docs` works offline).

Each npm package pinned in webui/vendor.json is served under `/docs/<package>@<version>/<file>`
(`/docs/swagger-ui-dist@5.35.0/swagger-ui-bundle.js`): a path below `/docs`, which the gateway
answers itself before any route, so it cannot clash with a REST route beyond `/docs` itself;
and a URL that changes with the version, so browsers may keep a file for a year. A browser that
accepts gzip gets the file gzipped (about a fifth of its size; compressed once, off the event
loop, then kept).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

WEBUI = Path(__file__).resolve().parent / "webui"
_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
CACHE_FOREVER = b"public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    file: Path
    content_type: bytes


def folder(package: str) -> str:
    """The folder of an npm package under webui/ (`@asyncapi/react-component` →
    `asyncapi-react-component`)."""
    return package.removeprefix("@").replace("/", "-")


def _catalogue() -> tuple[dict[str, Asset], dict[str, str]]:
    """Every shipped file by URL path, and each package's URL prefix by package name."""
    pins: dict[str, dict[str, object]] = json.loads((WEBUI / "vendor.json").read_text())
    found: dict[str, Asset] = {}
    prefixes: dict[str, str] = {}
    for package, pin in pins.items():
        prefix = f"/docs/{folder(package)}@{pin['version']}"
        prefixes[package] = prefix
        files = pin["files"]
        assert isinstance(files, list)
        for name in files:
            file = WEBUI / folder(package) / Path(name).name
            kind = _TYPES.get(file.suffix, b"text/plain; charset=utf-8")
            found[f"{prefix}/{file.name}"] = Asset(file, kind)
    return found, prefixes


ASSETS, PREFIXES = _catalogue()


def url(package: str, name: str) -> str:
    """The path a shipped file is served at, without the leading slash (the page refers to
    it relative to `/docs`, so the page also works behind a path prefix)."""
    return f"{PREFIXES[package]}/{name}".lstrip("/")


_read: dict[str, bytes] = {}


def content(path: str) -> bytes:
    """A shipped file's bytes (read once, then kept)."""
    data = _read.get(path)
    if data is None:
        data = _read[path] = ASSETS[path].file.read_bytes()
    return data


_gzipped: dict[str, bytes] = {}


async def gzipped(path: str) -> bytes:
    """A shipped file gzipped (read and compressed in a thread on first use, then kept; the
    file's own bytes are not kept for it)."""
    data = _gzipped.get(path)
    if data is None:
        data = _gzipped[path] = await asyncio.to_thread(_compress, ASSETS[path].file)
    return data


def _compress(file: Path) -> bytes:
    return gzip.compress(file.read_bytes(), 9, mtime=0)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an `Accept-Encoding` value admits gzip (RFC 9110: named, else by `*`; a q-value
    of 0 refuses)."""
    wildcard: bool | None = None
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        weight = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding != "*":
            return weight > 0
        wildcard = weight > 0
    return bool(wildcard)
