"""meshctl run in-process (typer's CliRunner) against the session's real mesh."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import Result
from meshctl.app import app
from typer.testing import CliRunner

from devstack.pki import Identity, Role
from devstack.stack import Stack

Meshctl = Callable[..., Result]


@pytest.fixture
def meshctl(mesh: Stack) -> Meshctl:
    """Run `meshctl ARGS...` with the environment pointing at the mesh; fails on any unexpected exception."""
    env = {
        "MESH_COORDINATOR_URL": mesh.coordinator_url,
        "MESH_API_KEY": mesh.api_key,
        "MESH_REGISTRY_URL": mesh.registry_url,
        "MESH_TASKSTORE_URL": mesh.taskstore_url,
        **mesh.identity_env(Identity("meshctl", Role.OBSERVER)),  # broker, TLS files and meshctl's credentials
        "MESH_ORG": mesh.org,
        "MESH_UNIT": mesh.unit,
        "COLUMNS": "200",
    }

    return runner(env)


def runner(env: dict[str, str]) -> Meshctl:
    """`meshctl ARGS...` in-process with `env`; fails on any exception other than a deliberate exit."""

    def run(*args: str) -> Result:
        result = CliRunner().invoke(app, list(args), env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"meshctl {' '.join(args)} raised:\n{result.output}") from result.exception
        return result

    return run


@pytest.fixture
def meshctl_runner() -> Callable[[dict[str, str]], Meshctl]:
    """For a module's own stack: `meshctl_runner(env)` runs meshctl with that environment."""
    return runner
