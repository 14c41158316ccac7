"""What-if runs: measure a proposed fix without editing shared code.

A patch is any importable module with an `install()` function that changes behaviour at import time.
`python -m loadtests.bench.whatif <patch[,patch]> <module> [args]` installs the patches, then runs
`python -m <module> [args]`; the benchmark wraps every Python process of the run that way when BENCH_WHATIF is
set, and installs the same patches in its own process (the requesters)."""

from __future__ import annotations

import importlib
import runpy
import sys
from collections.abc import Iterable


def install(patches: Iterable[str]) -> None:
    """Import each patch module and call its install()."""
    for name in patches:
        importlib.import_module(name).install()


def main() -> None:
    patches, module = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    install(filter(None, patches.split(",")))
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
