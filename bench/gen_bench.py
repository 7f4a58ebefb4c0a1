"""`keel gen` wall time against plain `buf generate`, on synthetic workspaces.

Two shapes:

- chains of 10/100/500 files: each has 16 messages and a 5-rpc service and imports the two files
  before it; everything is generated.
- googleapis-shaped (`--googleapis FILES`, default 7,000): shared type files imported everywhere,
  hundreds of products of 20 files, one product of 156 files (three versions, like
  google/cloud/discoveryengine); every file commented throughout, a share of the services with
  `google.api.http` rules (`**` ones among them). Generation is restricted to the big product with
  `--path`, for both tools, as in `keel gen --path google/cloud/discoveryengine`.

The baseline is what a team would otherwise write: `buf generate` with protoc's python builtin
(protoc_path → grpcio-tools' protoc), a grpc_python plugin, mypy and mypy_grpc, every plugin with
`strategy: all`. It writes less than keel gen (no *_keel.py, no OpenAPI). Both run fresh (output
folders removed) in interleaved rounds, alternating which goes first, so the machine's drift hits
both; a case's ratio is the median of each round's keel/buf ratio.

Targets: keel gen fresh ≤ 1.0x the baseline; keel gen no-op rerun < 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
WORK = Path(__file__).resolve().parent / "_work"
KEEL_PROTOS = Path(__file__).resolve().parent.parent / "tools/keel/keel/protos"

BUF_GEN = """version: v2
plugins:
  - protoc_builtin: python
    protoc_path: {protoc}
    out: out
    strategy: all
  - local: {bin}/protoc-gen-grpc_python
    out: out
    strategy: all
  - local: {bin}/protoc-gen-mypy
    out: out
    strategy: all
  - local: {bin}/protoc-gen-mypy_grpc
    out: out
    strategy: all
"""


def synthetic_file(index: int) -> str:
    """One proto file: 16 messages, a 5-rpc service, imports of the two files before it."""
    package = f"synth.p{index:04d}.v1"
    lines = ['syntax = "proto3";', "", f"package {package};", ""]
    lines.append('import "google/protobuf/timestamp.proto";')
    imports = [i for i in (index - 1, index - 2) if i >= 0]
    lines += [f'import "synth/p{i:04d}/v1/f{i:04d}.proto";' for i in imports]
    lines.append("")
    for m in range(16):
        lines.append(f"// Message {m} of file {index}.")
        lines.append(f"message M{m} {{")
        lines.append("  string id = 1;")
        lines.append("  int64 count = 2;")
        lines.append("  repeated string tags = 3;")
        lines.append("  map<string, int32> scores = 4;")
        lines.append("  google.protobuf.Timestamp at = 5;")
        if m:
            lines.append(f"  M{m - 1} previous = 6;")
        if imports:
            lines.append(f"  synth.p{imports[0]:04d}.v1.M{m} upstream = 7;")
        lines.append("}")
        lines.append("")
    lines.append(f"service S{index:04d}Service {{")
    for r in range(5):
        lines.append(f"  rpc Call{r}(M{r}) returns (M{r + 5});")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- the googleapis-shaped workspace -----------------------------------------------------------

SHARED_FILES = 60
BIG_PRODUCT = "bigsearch"
BIG_VERSIONS = ("v1", "v1alpha", "v1beta")
BIG_FILES_PER_VERSION = 52
PRODUCT_FILES = 20  # per product, over two versions
COMMENT = (
    "// {what}. Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\n"
    "// tempor incididunt ut labore et dolore magna aliqua: see the [Resource][{ref}] and\n"
    "// its `name`, formatted as `projects/{{project}}/locations/{{location}}/items/{{item}}`.\n"
)
RULES = (  # (verb, template, body) per rpc; the shapes googleapis uses most, `**` included
    ("get", "/{v}/{{name=projects/*/locations/*/{c}/*}}", ""),
    ("get", "/{v}/{{parent=projects/*/locations/*}}/{c}", ""),
    ("post", "/{v}/{{parent=projects/*/locations/*}}/{c}", "item"),
    ("patch", "/{v}/{{name=projects/*/locations/*/{c}/*}}", "item"),
    ("post", "/{v}/{{name=projects/*/locations/*/{c}/**}}/entries:purge", "*"),
)


def _shared_file(index: int) -> str:
    """google/type-like: 8 commented messages and an enum, imported by many files."""
    package = f"gx.type.t{index:02d}"
    lines = ['syntax = "proto3";', "", f"package {package};", ""]
    lines.append('import "google/protobuf/timestamp.proto";')
    lines.append("")
    lines.append(COMMENT.format(what=f"Kinds of shared type {index}", ref=f"{package}.T0"))
    lines.append("enum Kind {")
    lines += [f"  KIND_{k} = {k};" for k in range(6)]
    lines.append("}")
    for m in range(8):
        lines.append(COMMENT.format(what=f"Shared type {m}", ref=f"{package}.T{m}"))
        lines.append(f"message T{m} {{")
        for f in range(6):
            lines.append(f"  // Field {f}, documented like googleapis documents its fields.")
            lines.append(f"  string field_{f} = {f + 1};")
        lines.append("  Kind kind = 7;")
        lines.append("  google.protobuf.Timestamp update_time = 8;")
        lines.append("}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _product_file(product: str, version: str, index: int) -> str:
    """A product file: 10 commented messages using shared types and earlier files of its
    version; every third file has a 5-rpc service, two services in three with HTTP rules."""
    package = f"gx.{product}.{version}"
    shared = [(index * 7 + k * 13) % SHARED_FILES for k in range(3)]
    earlier = [i for i in (index - 1, index - 3) if i >= 0]
    lines = ['syntax = "proto3";', "", f"package {package};", ""]
    service = index % 3 == 2
    http = service and index % 9 != 8
    if http:
        lines.append('import "google/api/annotations.proto";')
    lines.append('import "google/protobuf/field_mask.proto";')
    lines += [f'import "gx/type/t{s:02d}.proto";' for s in sorted(set(shared))]
    lines += [f'import "gx/{product}/{version}/f{i:03d}.proto";' for i in earlier]
    lines.append("")
    for m in range(10):
        name = f"F{index:03d}M{m}"
        lines.append(COMMENT.format(what=f"Message {m} of file {index}", ref=f"{package}.{name}"))
        lines.append(f"message {name} {{")
        lines.append("  // The resource name.")
        lines.append("  string name = 1;")
        lines.append("  // The parent collection.")
        lines.append("  string parent = 2;")
        lines.append("  // How many to return.")
        lines.append("  int32 page_size = 3;")
        lines.append(f"  // A shared type.\n  gx.type.t{shared[m % 3]:02d}.T{m % 8} item = 4;")
        lines.append("  // Which fields to update.")
        lines.append("  google.protobuf.FieldMask update_mask = 5;")
        for number, other in enumerate(earlier, start=6):
            lines.append(
                f"  // From an earlier file.\n  F{other:03d}M{m} related_{number} = {number};"
            )
        lines.append("}")
        lines.append("")
    if service:
        collection = f"items{index}"
        lines.append(COMMENT.format(what=f"Service of file {index}", ref=f"{package}.F{index}"))
        lines.append(f"service F{index:03d}Service {{")
        for r, (verb, template, body) in enumerate(RULES):
            lines.append(COMMENT.format(what=f"Method {r}", ref=f"{package}.F{index:03d}M{r}"))
            lines.append(f"  rpc Call{r}(F{index:03d}M{r}) returns (F{index:03d}M{r + 5}) {{")
            if http:
                path = template.format(v=version, c=collection)
                rule = f'{verb}: "{path}"' + (f' body: "{body}"' if body else "")
                lines.append(f"    option (google.api.http) = {{{rule}}};")
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def make_googleapis_workspace(root: Path, files: int) -> tuple[Path, str, int]:
    """A googleapis-shaped workspace of about `files` files; the path to generate and its size."""
    if root.exists():
        shutil.rmtree(root)
    proto = root / "proto"
    written: dict[str, str] = {}
    for name in ("annotations.proto", "http.proto"):  # vendored, as googleapis does
        written[f"google/api/{name}"] = (KEEL_PROTOS / "google/api" / name).read_text()
    for i in range(SHARED_FILES):
        written[f"gx/type/t{i:02d}.proto"] = _shared_file(i)
    for version in BIG_VERSIONS:
        for i in range(BIG_FILES_PER_VERSION):
            text = _product_file(BIG_PRODUCT, version, i)
            written[f"gx/{BIG_PRODUCT}/{version}/f{i:03d}.proto"] = text
    products = max(0, (files - len(written)) // PRODUCT_FILES)
    for p in range(products):
        for version in ("v1", "v2"):
            for i in range(PRODUCT_FILES // 2):
                text = _product_file(f"prod{p:03d}", version, i)
                written[f"gx/prod{p:03d}/{version}/f{i:03d}.proto"] = text
    for name, text in written.items():
        path = proto / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _configure(root)
    return root, f"gx/{BIG_PRODUCT}", len(written)


def make_workspace(root: Path, files: int) -> Path:
    if root.exists():
        shutil.rmtree(root)
    for i in range(files):
        path = root / f"proto/synth/p{i:04d}/v1/f{i:04d}.proto"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(synthetic_file(i))
    _configure(root)
    return root


def _configure(root: Path) -> None:
    (root / "buf.yaml").write_text("version: v2\nmodules:\n  - path: proto\n")
    protoc = root / "protoc"
    protoc.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m grpc_tools.protoc "$@"\n')
    protoc.chmod(0o755)
    (root / "buf.gen.yaml").write_text(BUF_GEN.format(protoc=protoc, bin=BIN))


# --- measuring ---------------------------------------------------------------------------------


def timed(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return elapsed


@dataclass(frozen=True)
class Case:
    label: str
    buf: list[float]
    keel: list[float]
    keel_noop: float
    keel_files: int
    buf_files: int

    @property
    def ratios(self) -> list[float]:
        """Each round's keel/buf ratio: both measured in that round, drift cancels out."""
        return [k / b for k, b in zip(self.keel, self.buf, strict=True)]


def measure(label: str, ws: Path, rounds: int, path: str = "") -> Case:
    """`path`: an import path to restrict generation to (buf takes it with its module folder)."""
    buf = [str(BIN / "buf"), "generate", *(["--path", f"proto/{path}"] if path else [])]
    keel = [str(BIN / "keel"), "gen", "--workspace", ".", "--out", "keel_out"]
    keel += ["--path", path] if path else []
    times: dict[str, list[float]] = {"buf": [], "keel": []}
    for round_ in range(rounds):  # interleaved, alternating which goes first
        order = ("buf", "keel") if round_ % 2 == 0 else ("keel", "buf")
        for tool in order:
            shutil.rmtree(ws / ("out" if tool == "buf" else "keel_out"), ignore_errors=True)
            times[tool].append(timed(buf if tool == "buf" else keel, ws))
    noop = timed(keel, ws)
    return Case(
        label,
        times["buf"],
        times["keel"],
        noop,
        keel_files=sum(1 for p in (ws / "keel_out").rglob("*") if p.is_file()),
        buf_files=sum(1 for p in (ws / "out").rglob("*") if p.is_file()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="chain sizes")
    parser.add_argument(
        "--googleapis",
        type=int,
        default=None,
        metavar="FILES",
        help="files of the googleapis-shaped case (default 7000; 0 skips it, as does giving "
        "--sizes without it)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    args = parser.parse_args()
    sizes = args.sizes if args.sizes is not None else [10, 100, 500]
    googleapis = args.googleapis
    if googleapis is None:
        googleapis = 7000 if args.sizes is None else 0
    print(
        "keel gen vs plain buf generate (python + grpc_python + mypy + mypy_grpc, strategy: all); "
        f"{args.rounds} interleaved rounds, fresh outputs, {os.cpu_count()} cores"
    )
    print(
        f"{'files':>6} {'buf fresh':>10} {'keel fresh':>11} {'ratio':>6} {'keel no-op':>11} "
        f"{'outputs keel/buf':>17}"
    )
    cases = [
        measure(str(size), make_workspace(WORK / f"ws{size}", size), args.rounds) for size in sizes
    ]
    if googleapis:
        root, path, count = make_googleapis_workspace(WORK / "googleapis", googleapis)
        cases.append(measure(f"{count}*", root, args.rounds, path))
    for case in cases:
        print(
            f"{case.label:>6} {statistics.median(case.buf):>9.2f}s "
            f"{statistics.median(case.keel):>10.2f}s {statistics.median(case.ratios):>5.2f}x "
            f"{case.keel_noop:>10.3f}s {case.keel_files:>8}/{case.buf_files}"
        )
    print("each round's ratio keel/buf (in round order):")
    for case in cases:
        print(f"  {case.label:>6} " + " ".join(f"{r:.2f}" for r in case.ratios))
    if googleapis:
        print(
            f"* googleapis-shaped, generated with --path gx/{BIG_PRODUCT} "
            f"({len(BIG_VERSIONS) * BIG_FILES_PER_VERSION} of its files)"
        )
    print("targets: keel fresh ratio <= 1.00x; keel no-op < 0.3 s")


if __name__ == "__main__":
    main()
