"""Regenerate the golden outputs: `make golden` (tests/golden/proto → tests/golden/out)."""

from pathlib import Path

from keel.codegen import pipeline

HERE = Path(__file__).resolve().parent
PROTO = HERE / "proto"
OUT = HERE / "out"


def main() -> None:
    print(pipeline.run(PROTO, OUT, force=True).summary())


if __name__ == "__main__":
    main()
