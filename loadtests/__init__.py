"""Load tests (Locust) and the side-by-side benchmark of the mesh.

`python -m loadtests loadtest` runs the Locust scenarios of `loadtests/locustfile.py` headless against a local mesh;
`python -m loadtests bench` measures the floor, the binding, the HTTP face, the peers and pool scaling in one run.
See docs/benchmarks.md.
"""
