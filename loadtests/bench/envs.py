"""Each mesh service's own environment, as its image has it: `uv sync --locked --no-dev --no-editable --package
<service>` (the Dockerfiles' command) into a folder of the report. The workspace's shared virtualenv holds every
service's dependencies at once, and some libraries load what happens to be installed: the a2a-sdk imports
SQLAlchemy (there for the task store) and httpx imports rich (there for meshctl) into the coordinator. Measured
there, a service's memory is that of the whole workspace, not its own. Like the image, the environment holds its
bytecode, compiled at the optimization level the service's image runs at (compose.yaml's SERVICE_OPTIMIZE build
argument), and the service runs at that level (`PYTHONOPTIMIZE`): without it, every start compiled each module anew."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path

import yaml

from devstack.processes import REPO_ROOT

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 600.0
SHARED_PACKAGE = "a2amesh"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"


@functools.cache
def image_optimization(module: str) -> str:
    """The `PYTHONOPTIMIZE` level the image of the service running `module` has (services/Dockerfile's
    SERVICE_OPTIMIZE, as compose.yaml builds it); "" for none. Read once per module: every start of a service
    in the bench asks again, and compose.yaml does not change during a run."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for service in services.values():
        args = (service.get("build") or {}).get("args") or {}
        if args.get("SERVICE_MODULE") == module:
            return str(args.get("SERVICE_OPTIMIZE", ""))
    return ""


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
            self._pythons[key] = self._sync(module.replace("_", "-"), key[1], image_optimization(module))
        return self._pythons[key]

    def _sync(self, package: str, extras: tuple[str, ...], optimize: str) -> str:
        target = self.root / "+".join((package, *extras))
        log.info("building %s's own environment in %s", package, target)
        command = ["uv", "sync", "--locked", "--no-dev", "--no-editable", "--quiet", "--compile-bytecode"]
        command += ["--package", package]
        command += [arg for extra in extras for arg in ("--extra", extra)]
        # uv caches a workspace member's wheel by its pyproject.toml alone: rebuild ours from the sources as they are
        command += [arg for member in (package, SHARED_PACKAGE) for arg in ("--reinstall-package", member)]
        env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(target)}
        env.pop("VIRTUAL_ENV", None)  # uv would warn that it does not match the target
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, timeout=SYNC_TIMEOUT)
        python = str(target / "bin" / "python")
        if optimize:  # the image compiles its environment at that level too (services/Dockerfile)
            compile_all = [python, "-m", "compileall", "-q", "-o", optimize, str(target / "lib")]
            subprocess.run(compile_all, check=True, timeout=SYNC_TIMEOUT, stdout=subprocess.DEVNULL)
        return python
