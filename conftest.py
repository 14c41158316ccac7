"""Fixtures for every test suite in the repository: real broker, Redis and mesh processes (see devstack.fixtures)."""

pytest_plugins = ["devstack.fixtures"]
