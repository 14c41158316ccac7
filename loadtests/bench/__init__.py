"""The side-by-side benchmark: `python -m loadtests bench` (see docs/benchmarks.md)."""
