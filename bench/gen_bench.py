"""`keel gen` wall time against plain `buf generate`, on synthetic workspaces of 10/100/500 files.

Each file has 16 messages and a 5-rpc service, and imports the two files before it. The baseline,
measured in the same run, is what a team would otherwise write: `buf generate` with protoc's
python builtin (protoc_path → grpcio-tools' protoc), a grpc_python plugin, mypy and mypy_grpc,
every plugin with `strategy: all`. It writes less than keel gen (no *_keel.py).

Targets (issue 2): keel gen fresh ≤ 1.0x the baseline; keel gen no-op rerun < 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
WORK = Path(__file__).resolve().parent / "_work"

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


def make_workspace(root: Path, files: int) -> Path:
    if root.exists():
        shutil.rmtree(root)
    for i in range(files):
        path = root / f"proto/synth/p{i:04d}/v1/f{i:04d}.proto"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(synthetic_file(i))
    (root / "buf.yaml").write_text("version: v2\nmodules:\n  - path: proto\n")
    protoc = root / "protoc"
    protoc.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m grpc_tools.protoc "$@"\n')
    protoc.chmod(0o755)
    (root / "buf.gen.yaml").write_text(BUF_GEN.format(protoc=protoc, bin=BIN))
    return root


def timed(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(files: int) -> dict[str, float]:
    ws = make_workspace(WORK / f"ws{files}", files)
    buf = [str(BIN / "buf"), "generate"]
    keel = [str(BIN / "keel"), "gen", "--workspace", ".", "--out", "keel_out"]
    results = {"buf_fresh": timed(buf, ws), "buf_rerun": timed(buf, ws)}
    results["keel_fresh"] = timed(keel, ws)
    results["keel_noop"] = timed(keel, ws)
    outputs = sum(1 for p in (ws / "keel_out").rglob("*") if p.is_file())
    baseline = sum(1 for p in (ws / "out").rglob("*") if p.is_file())
    results["keel_files"] = outputs
    results["buf_files"] = baseline
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    args = parser.parse_args()
    print("keel gen vs plain buf generate (python + grpc_python + mypy + mypy_grpc, strategy: all)")
    header = (
        f"{'files':>6} {'buf fresh':>10} {'buf rerun':>10} {'keel fresh':>11} "
        f"{'ratio':>6} {'keel no-op':>11} {'outputs keel/buf':>17}"
    )
    print(header)
    for size in args.sizes:
        r = measure(size)
        print(
            f"{size:>6} {r['buf_fresh']:>9.2f}s {r['buf_rerun']:>9.2f}s {r['keel_fresh']:>10.2f}s "
            f"{r['keel_fresh'] / r['buf_fresh']:>5.2f}x {r['keel_noop']:>10.3f}s "
            f"{int(r['keel_files']):>8}/{int(r['buf_files'])}"
        )
    print("targets: keel fresh ratio <= 1.00x; keel no-op < 0.3 s")


if __name__ == "__main__":
    main()
