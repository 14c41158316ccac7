"""Each mesh service's own environment, as its image has it: `uv sync --locked --no-dev --no-editable --package
<service>` (the Dockerfiles' command) into a folder of the report. The workspace's shared virtualenv holds every
service's dependencies at once, and some libraries load what happens to be installed: the a2a-sdk imports
SQLAlchemy (there for the task store) and httpx imports rich (there for meshctl) into the coordinator. Measured
there, a service's memory is that of the whole workspace, not its own."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from devstack.processes import REPO_ROOT

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 600.0
SHARED_PACKAGE = "a2amesh"


class ServiceEnvs:
    """Builds (once per run) and hands out the Python of each service's own environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pythons: dict[tuple[str, tuple[str, ...]], str] = {}

    def python(self, module: str, extras: tuple[str, ...] = ()) -> str:
        """The interpreter of the environment that runs `module` (a service package, e.g. `mesh_coordinator`), with
        the package's `extras` installed as its image installs them (the Dockerfile's SERVICE_EXTRAS: the task
        store's `postgres`, psycopg, where it records into PostgreSQL)."""
        key = (module, tuple(sorted(extras)))
        if key not in self._pythons:
            self._pythons[key] = self._sync(module.replace("_", "-"), key[1])
        return self._pythons[key]

    def _sync(self, package: str, extras: tuple[str, ...]) -> str:
        target = self.root / "+".join((package, *extras))
        log.info("building %s's own environment in %s", package, target)
        command = ["uv", "sync", "--locked", "--no-dev", "--no-editable", "--quiet", "--package", package]
        command += [arg for extra in extras for arg in ("--extra", extra)]
        # uv caches a workspace member's wheel by its pyproject.toml alone: rebuild ours from the sources as they are
        command += [arg for member in (package, SHARED_PACKAGE) for arg in ("--reinstall-package", member)]
        env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(target)}
        env.pop("VIRTUAL_ENV", None)  # uv would warn that it does not match the target
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, timeout=SYNC_TIMEOUT)
        return str(target / "bin" / "python")
