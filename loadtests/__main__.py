"""`python -m loadtests loadtest` (Locust, headless) or `python -m loadtests bench` (the side-by-side benchmark)."""

from __future__ import annotations

import sys

USAGE = (
    "usage: python -m loadtests {loadtest|bench|bench-scale}   "
    "(settings: LOCUST_* / BENCH_* / MESH_*, see docs/benchmarks.md)"
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["loadtest"]:
        from loadtests.loadtest import main as loadtest

        return loadtest()
    if args == ["bench-scale"]:
        from loadtests.bench.scale import main as bench_scale

        return bench_scale()
    if args == ["bench"]:
        from loadtests.bench.runner import main as bench

        return bench()
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
