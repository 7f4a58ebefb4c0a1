"""`python -m keel.summary GEN_DIR`: the services, rpcs and HTTP routes generated there."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import keel


def describe(gen: Path) -> list[str]:
    """One line per service and per rpc of every `*_keel.py` under `gen`."""
    sys.path.insert(0, str(gen.resolve()))
    lines = []
    for path in sorted(gen.rglob("*_keel.py")):
        module = importlib.import_module(".".join(path.relative_to(gen).with_suffix("").parts))
        specs = [v for v in vars(module).values() if isinstance(v, keel.ServiceSpec)]
        for spec in specs:
            lines.append(f"{spec.name}  ({spec.file})")
            for method in spec.methods:
                routes = ", ".join(f"{rule.method} {rule.path}" for rule in method.http)
                edge = routes or "gRPC only"
                lines.append(
                    f"  {method.python_name:<22} {method.kind.value:<14} "
                    f"{method.idempotency.name:<16} {edge}"
                )
    return lines


def main() -> None:
    gen = Path(sys.argv[1] if len(sys.argv) > 1 else "gen")
    print("\n".join(describe(gen)))


if __name__ == "__main__":
    main()
