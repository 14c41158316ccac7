"""The whole mesh as local processes: the machine's mosquitto and redis-server with the project's config, and
every service started the way its container starts it (`python -m <package>`), on ports of our choosing."""

from __future__ import annotations

import getpass
import os
import shutil
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from a2amesh.settings import MqttSettings
from devstack import postgres, redis_users
from devstack.dynsec import add_identity
from devstack.pki import ADMIN, TESTER, ClientFiles, Identity, Pki, Role
from devstack.processes import REPO_ROOT, ManagedProcess, free_port, http_ready, tcp_ready
from devstack.topology import TOPOLOGY, agent_package

SERVER_NAMES: dict[str, tuple[str, ...]] = {
    **{
        name: (name, f"{name}.a2a-mesh.svc", f"{name}.a2a-mesh.svc.cluster.local", "localhost")
        for name in ("registry", "taskstore", "postgres")
    },
    # Compose's second registry (profile replicas), which coordinator-1 reads by its own service name (Kubernetes'
    # registry pods all serve the Service `registry` with the certificate above)
    "registry-1": ("registry-1", "localhost"),
    # Compose's second task store partition (compose.postgres.yaml), which coordinator-1 reads by its service name
    "taskstore-1": ("taskstore-1", "localhost"),
}
"""The DNS names each server certificate carries (Compose service names, Kubernetes Services, loopback)."""

REDIS_REGISTRY_USER = "registry"
"""The registry's Redis user: its index, `mesh:*` keys (topology.yaml declares every Redis user and its rights)."""
REDIS_ADMIN_USER = "mesh-admin"
REDIS_COORDINATOR_USER = "coordinator"
"""The coordinators' Redis user: their shared rate limits only (mesh_coordinator.ratelimit)."""

BROKER_POLICY_DIR = REPO_ROOT / "services" / "broker" / "conf.d"

AGENTS_DIR = REPO_ROOT / "services" / "agents"


def discover_agents(agents_dir: Path = AGENTS_DIR) -> dict[str, str]:
    """Agent id -> package of every folder `services/agents/<name>/` with a `src/agent_<name>/` package (what
    tests/test_topology.py compares with the agents topology.yaml declares)."""
    found: dict[str, str] = {}
    for folder in sorted(agents_dir.iterdir()) if agents_dir.is_dir() else []:
        package = agent_package(folder.name)
        if (folder / "src" / package / "__main__.py").is_file():
            found[folder.name] = package
    return found


def selected_agents() -> dict[str, str]:
    """The agents to run: all declared, or those named in MESH_DEV_AGENTS (comma-separated)."""
    agents = AGENTS
    wanted = [name.strip() for name in os.environ.get("MESH_DEV_AGENTS", "").split(",") if name.strip()]
    unknown = set(wanted) - set(agents)
    if unknown:
        raise ValueError(f"MESH_DEV_AGENTS names unknown agents: {sorted(unknown)}; known: {sorted(agents)}")
    return {name: agents[name] for name in wanted} if wanted else dict(agents)


AGENTS: dict[str, str] = TOPOLOGY.agent_packages
"""Every agent of the repository, as topology.yaml declares them."""

AGENT_REPLICAS = 16
"""The most pods of one agent Kubernetes runs (its StatefulSet's HorizontalPodAutoscaler stops there;
k8s/base/agents/*.yaml). Not a ceiling of identities: each pod enrolls its own as it starts (a2amesh.enroll)."""


def replica_names(agent_id: str, replicas: int = AGENT_REPLICAS) -> list[str]:
    """The names of an agent's pods, `<agent>-0` ... `<agent>-<replicas-1>`: each enrolls the identity of its name
    in the pool `<agent>` (docs/security.md, "Pools without a ceiling")."""
    return [f"{agent_id}-{ordinal}" for ordinal in range(replicas)]


_SERVICE_IDENTITIES = TOPOLOGY.service_identities()
"""The mesh services' broker identities, by the module that runs each (topology.yaml)."""

DYNSEC_PLUGIN_PATHS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib")


def find_dynsec_plugin() -> str:
    """Mosquitto's dynamic-security plugin, wherever the distribution put it."""
    for folder in DYNSEC_PLUGIN_PATHS:
        candidate = Path(folder) / "mosquitto_dynamic_security.so"
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError("mosquitto_dynamic_security.so not found: install Debian's mosquitto package")


def find_binary(name: str) -> str:
    """The path of a system binary, looking in sbin too (Debian installs mosquitto there)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        raise FileNotFoundError(f"{name} not found: install it (make test installs it through apt-get)")
    return found


@dataclass
class Ports:
    """Every port the stack listens on (all on 127.0.0.1)."""

    mqtt: int
    redis: int
    registry: int
    taskstore: int
    coordinator: int
    console: int = 8003
    coordinator_grpc: int = 8010
    """The coordinator's A2A gRPC binding."""

    @classmethod
    def fixed(cls) -> Ports:
        """The documented ports of `make dev`."""
        return cls(mqtt=8883, redis=6379, registry=8001, taskstore=8002, coordinator=8000, console=8003)

    @classmethod
    def random(cls) -> Ports:
        """Free ports, so tests never collide with a running `make dev` or with each other."""
        return cls(
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            console=free_port(),
            coordinator_grpc=free_port(),
        )


@dataclass
class Stack:
    """A mesh of local processes under one run directory."""

    run_dir: Path
    ports: Ports = field(default_factory=Ports.fixed)
    org: str = "acme"
    unit: str = "default"
    agents: dict[str, str] = field(default_factory=selected_agents)
    database_url: str | None = None
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    pki_dir: Path | None = None
    """Certificates and credentials (default: <run_dir>/pki; `make dev` uses infra/broker-certs, as Compose does)."""
    tester: bool = False
    """Also issue the `mesh-tester` identity (any topic, any client id): for test harnesses only."""
    provisioned: dict[str, Identity] = field(default_factory=dict)
    internal_tls: bool = False
    """Serve the registry's and task store's APIs over mutual TLS with the mesh's certificates (a2amesh.internal)."""
    broker_of: Stack | None = None
    """Another stack whose running broker (and PKI) this one uses instead of starting its own."""
    broker_extra: str = ""
    coordinators: int = 1
    """Coordinator replicas to run: the first, then coordinator-1, ... (more than one: rate limits shared in Redis)."""
    """More broker configuration after the project's policy (an edge site's bridge section: devstack.bridge)."""

    # -- identities ------------------------------------------------------------------------------------------
    @property
    def pki(self) -> Pki:
        if self.broker_of is not None:
            return Pki(self.broker_of.pki.root, self.org, self.unit)
        return Pki(self.pki_dir or self.run_dir / "pki", self.org, self.unit)

    def identities(self) -> list[Identity]:
        """Everyone the broker admits from the start: services, agents (and their replicas), meshctl, the health probe
        (and tester)."""
        fixed = TOPOLOGY.broker_identities(list(self.agents))
        # Kubernetes runs each agent as pods <agent>-0, -1, ... of the pool <agent>, which enroll their identities as
        # they start from the pool's template (`pools`); make dev and Compose run the plain identity
        if self.tester:
            fixed.append(Identity(TESTER, Role.TESTER))
        return [*fixed, *self.provisioned.values()]

    def pools(self) -> list[str]:
        """The pools whose replicas enroll themselves (one per agent: its Kubernetes pods)."""
        return list(self.agents)

    def provision(self, identity: Identity) -> None:
        """Admit an identity: in the initial broker configuration, or at once on a running broker."""
        # a stack on its own broker wrote its fixed identities into the broker's initial configuration;
        # a stack on another's broker has admitted only what it provisioned
        admitted = self.provisioned.values() if self.broker_of else self.identities()
        if identity in admitted:
            return
        self.provisioned[identity.name] = identity
        owner = self.broker_of or self
        broker = owner.processes.get("broker")
        if broker is not None and broker.running:
            admin = self.pki.client(Identity(ADMIN, Role.TESTER))
            add_identity(self.mqtt_settings(admin), self.pki, identity)

    def mqtt_settings(self, files: ClientFiles) -> MqttSettings:
        """How a client with these credentials reaches the broker."""
        return MqttSettings(
            host="127.0.0.1",
            port=self.ports.mqtt,
            tls=True,
            ca_file=self.pki.ca_cert,
            cert_file=files.cert,
            key_file=files.key,
            username=files.username,
            password_file=files.password_file,
        )

    def tester_settings(self) -> MqttSettings:
        """Credentials that may do anything on the broker (test stacks only)."""
        assert self.tester or (self.broker_of and self.broker_of.tester), "this stack issues no tester identity"
        return self.mqtt_settings(self.pki.client(Identity(TESTER, Role.TESTER)))

    def identity_env(self, identity: Identity, prefix: str = "MESH_MQTT__") -> dict[str, str]:
        """The environment a process needs to connect as `identity`."""
        files = self.pki.client(identity)
        return {
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(self.ports.mqtt),
            f"{prefix}TLS": "true",
            f"{prefix}CA_FILE": str(self.pki.ca_cert),
            f"{prefix}CERT_FILE": str(files.cert),
            f"{prefix}KEY_FILE": str(files.key),
            f"{prefix}USERNAME": files.username,
            f"{prefix}PASSWORD_FILE": str(files.password_file),
        }

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def coordinator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.coordinator}"

    @property
    def internal_scheme(self) -> str:
        return "https" if self.internal_tls else "http"

    @property
    def registry_url(self) -> str:
        return f"{self.internal_scheme}://127.0.0.1:{self.ports.registry}"

    @property
    def taskstore_url(self) -> str:
        return f"{self.internal_scheme}://127.0.0.1:{self.ports.taskstore}"

    def internal_verify(self) -> ssl.SSLContext | bool:
        """How the harness reads the internal APIs: with internal TLS, as meshctl (a reader), trusting the mesh CA."""
        if not self.internal_tls:
            return True
        files = self.pki.client(Identity("meshctl", Role.OBSERVER))
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(files.cert), str(files.key))
        return context

    def ensure_pki(self) -> None:
        """Every identity's credentials, the server certificates of the internal services and of PostgreSQL
        (`servers/<name>.crt/.key`; Kubernetes mounts the PostgreSQL one as the Secret postgres-tls), Redis's users
        and Compose's PostgreSQL password."""
        self.pki.ensure(self.identities(), pools=self.pools())
        for name, hosts in SERVER_NAMES.items():
            if not (self.pki.root / "servers" / f"{name}.crt").exists():
                self.pki.issue(f"servers/{name}", server_names=hosts)
        self.pki.client(Identity("console", Role.OBSERVER))  # the console's certificate for the internal APIs
        redis_users.write_acl(self.pki.root)  # Redis's users and their passwords (topology.yaml: redis_users)
        postgres.taskstore_password(self.pki.root)  # Compose's PostgreSQL password (compose.postgres.yaml)

    def internal_server_env(self, name: str) -> dict[str, str]:
        """A registry's or task store's server certificate (issued once, SANs localhost, its name, 127.0.0.1)."""
        if not self.internal_tls:
            return {}
        stem = f"servers/{name}"
        if not (self.pki.root / f"{stem}.crt").exists():
            self.pki.issue(stem, server_names=SERVER_NAMES[name])
        return {
            "MESH_INTERNAL__ENABLED": "true",
            "MESH_INTERNAL__CA_FILE": str(self.pki.ca_cert),
            "MESH_INTERNAL__SERVER_CERT_FILE": str(self.pki.root / f"{stem}.crt"),
            "MESH_INTERNAL__SERVER_KEY_FILE": str(self.pki.root / f"{stem}.key"),
        }

    def internal_client_env(self, name: str) -> dict[str, str]:
        """A client of the internal APIs without a broker identity (the console): a mesh certificate of its own."""
        if not self.internal_tls:
            return {}
        files = self.pki.client(Identity(name, Role.OBSERVER))  # a certificate only: never admitted on the broker
        return {
            "MESH_INTERNAL__ENABLED": "true",
            "MESH_INTERNAL__CA_FILE": str(self.pki.ca_cert),
            "MESH_INTERNAL__CERT_FILE": str(files.cert),
            "MESH_INTERNAL__KEY_FILE": str(files.key),
        }

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.console}"

    @property
    def api_key(self) -> str:
        """The key clients present to the coordinator (Authorization: Bearer <key>)."""
        return self.pki.api_key()

    @property
    def redis_url(self) -> str:
        """The registry's Redis, as the registry's own ACL user (password included: for test clients)."""
        return self.redis_url_for(REDIS_REGISTRY_USER)

    def redis_url_for(self, user: str, db: int = 0) -> str:
        """Redis as one of its ACL users (`registry`, or `mesh-admin` for tests that flush), password included."""
        return f"redis://{user}:{self.redis_password(user)}@127.0.0.1:{self.ports.redis}/{db}"

    def redis_password(self, user: str) -> str:
        """A Redis user's password, kept beside the mesh's other secrets (created once: devstack.redis_users)."""
        return redis_users.password(self.pki.root, user)

    def redis_env(self, user: str, prefix: str = "MESH_REDIS_") -> dict[str, str]:
        """How a service reaches Redis, as Compose and Kubernetes hand it over: the URL names its ACL user, the
        password stays in its file (`<prefix>URL`, `<prefix>PASSWORD_FILE`)."""
        self.redis_password(user)  # make sure the file exists
        return {
            f"{prefix}URL": f"redis://{user}@127.0.0.1:{self.ports.redis}/0",
            f"{prefix}PASSWORD_FILE": str(redis_users.password_file(self.pki.root, user)),
        }

    def base_env(self) -> dict[str, str]:
        """Settings every mesh process reads (see a2amesh.settings)."""
        return {
            "MESH_ORG": self.org,
            "MESH_UNIT": self.unit,
            "MESH_LOG_LEVEL": self.log_level,
            **self.extra_env,
        }

    # -- process definitions ---------------------------------------------------------------------------------
    def broker(self) -> ManagedProcess:
        """Mosquitto with the project's policy; only the listener and the data directory are local."""
        data_dir = self.run_dir / "broker"
        data_dir.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        self.ensure_pki()
        dynsec = data_dir / "dynamic-security.json"  # the broker's own copy: it writes runtime changes back
        if not dynsec.exists():
            shutil.copyfile(pki.dynsec_file, dynsec)
        config = self.run_dir / "mosquitto.conf"
        config.write_text(
            "# written by devstack: local listener, TLS files and data directory, then the project's broker policy\n"
            f"user {getpass.getuser()}\n"
            f"plugin {find_dynsec_plugin()}\n"
            f"plugin_opt_config_file {dynsec}\n"
            f"persistence_location {data_dir}/\n"
            "log_dest stdout\n"
            f"listener {self.ports.mqtt} 127.0.0.1\n"
            f"cafile {pki.ca_cert}\n"
            f"certfile {pki.broker_cert}\n"
            f"keyfile {pki.broker_key}\n"
            "require_certificate true\n"
            f"include_dir {BROKER_POLICY_DIR}\n"
            f"{self.broker_extra}"
        )
        os.chmod(config, 0o600)  # a bridge section holds a password
        return ManagedProcess(
            "broker",
            [find_binary("mosquitto"), "-c", str(config)],
            self.run_dir / "logs" / "broker.log",
            tcp_ready(self.ports.mqtt),
        )

    def redis(self) -> ManagedProcess:
        """redis-server on loopback; the registry's index is rebuilt from retained cards, so no persistence."""
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        acl_file = redis_users.write_acl(self.pki.root)  # the file Compose and Kubernetes run Redis with too
        argv = [
            find_binary("redis-server"),
            "--port",
            str(self.ports.redis),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
            "--aclfile",
            str(acl_file),
        ]
        return ManagedProcess("redis", argv, self.run_dir / "logs" / "redis.log", tcp_ready(self.ports.redis))

    def service(
        self, name: str, package: str, env: dict[str, str], ready: Callable[[], bool], identity: Identity | None = None
    ) -> ManagedProcess:
        """A mesh service run as its container runs it: `python -m <package>`, connecting as its own identity
        (inferred from the package: a service's role, else an agent named by MESH_AGENT_ID)."""
        identity = (
            identity
            or _SERVICE_IDENTITIES.get(package)
            or Identity(env.get("MESH_AGENT_ID", name), Role.AGENT, env.get("MESH_POOL"))
        )
        if package == "mesh_coordinator":
            env = {**self.identity_env(Identity("workflows", Role.AGENT), prefix="MESH_WORKFLOWS_MQTT__"), **env}
        return self.command(name, [sys.executable, "-m", package], env, ready, identity)

    def command(
        self, name: str, argv: list[str], env: dict[str, str], ready: Callable[[], bool] | None, identity: Identity
    ) -> ManagedProcess:
        """Any program as a member of this mesh: admitted to the broker as `identity`, with its credentials and
        the mesh's settings in its environment (MESH_MQTT__*)."""
        self.provision(identity)
        return ManagedProcess(
            name,
            argv,
            self.run_dir / "logs" / f"{name}.log",
            ready,
            env={**self.base_env(), **self.identity_env(identity), **env},
        )

    def registry(self) -> ManagedProcess:
        env = {
            **self.redis_env(REDIS_REGISTRY_USER),
            "MESH_HTTP_PORT": str(self.ports.registry),
            **self.internal_server_env("registry"),
        }
        ready = http_ready(f"{self.registry_url}/healthz", ca_file=str(self.pki.ca_cert))
        return self.service("registry", "mesh_registry", env, ready)

    def taskstore(self) -> ManagedProcess:
        database_url = self.database_url or f"sqlite:///{self.run_dir / 'taskstore.db'}"
        env = {
            "MESH_DATABASE_URL": database_url,
            "MESH_HTTP_PORT": str(self.ports.taskstore),
            **self.internal_server_env("taskstore"),
        }
        ready = http_ready(f"{self.taskstore_url}/healthz", ca_file=str(self.pki.ca_cert))
        return self.service("taskstore", "mesh_taskstore", env, ready)

    def replica(self, service: str, ordinal: int, http_port: int, **env: str) -> ManagedProcess:
        """One more replica of the registry or the task store (`<service>-<ordinal>`, its own broker identity, the
        same Redis or database as the first): the rest of its settings (a task store's MESH_PARTITION...) in `env`."""
        package = f"mesh_{service}"
        name = f"{service}-{ordinal}"
        identity = Identity(name, _SERVICE_IDENTITIES[package].role)
        backing = {"registry": self.redis_env(REDIS_REGISTRY_USER), "taskstore": {}}[service]
        if service == "taskstore":
            backing["MESH_DATABASE_URL"] = self.database_url or f"sqlite:///{self.run_dir / 'taskstore.db'}"
        settings = {**backing, "MESH_HTTP_PORT": str(http_port), "MESH_REPLICA_ID": name, **env}
        return self.service(name, package, settings, http_ready(f"http://127.0.0.1:{http_port}/healthz"), identity)

    def coordinator_replica(self, ordinal: int, http_port: int, grpc_port: int) -> ManagedProcess:
        """One more coordinator (`coordinator-<ordinal>`), beside the first, as Kubernetes runs its replicas: its
        own broker identity and hosted workflows agent (`workflows-<ordinal>`), the same registry, task store and
        keys, rate limits shared through Redis (docs/operations.md, "Scale")."""
        name, workflows = f"coordinator-{ordinal}", f"workflows-{ordinal}"
        identity = Identity(name, Role.COORDINATOR)
        self.provision(Identity(workflows, Role.AGENT))
        env = {
            **self.coordinator_env(http_port, grpc_port),
            **self.identity_env(Identity(workflows, Role.AGENT), prefix="MESH_WORKFLOWS_MQTT__"),
            "MESH_REPLICA_ID": name,
            "MESH_WORKFLOWS_ID": workflows,
            **self.replicated_env(),
        }
        ready = http_ready(f"http://127.0.0.1:{http_port}/healthz")
        return self.service(name, "mesh_coordinator", env, ready, identity)

    def replicated_env(self) -> dict[str, str]:
        """What a coordinator reads when it is one of several: the rate limits they share, the wait for a task
        another replica accepted (mesh_coordinator.replicas)."""
        return {
            **self.redis_env(REDIS_COORDINATOR_USER, prefix="MESH_RATE_LIMIT_REDIS_"),
            "MESH_REPLICA_READ_WAIT": "3",
        }

    def coordinator_env(self, http_port: int, grpc_port: int) -> dict[str, str]:
        """What every coordinator replica reads, whichever port it serves on."""
        self.pki.api_key()  # make sure the key file exists
        return {
            "MESH_HTTP_PORT": str(http_port),
            "MESH_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
            "MESH_REGISTRY_URL": self.registry_url,
            "MESH_TASKSTORE_URL": self.taskstore_url,
            "MESH_API_KEYS_FILE": str(self.pki.api_keys_file),
            "MESH_CARD_SIGNING_KEY_FILE": str(self.pki.card_signing_key()),
            "MESH_GRPC_PORT": str(grpc_port),
            **({"MESH_INTERNAL__ENABLED": "true"} if self.internal_tls else {}),
        }

    def coordinator(self, *, replicated: bool = False) -> ManagedProcess:
        """The first coordinator; `replicated`: one of several (rate limits in Redis, patient reads of tasks)."""
        env = self.coordinator_env(self.ports.coordinator, self.ports.coordinator_grpc)
        if replicated:
            env |= self.replicated_env()
        return self.service("coordinator", "mesh_coordinator", env, http_ready(f"{self.coordinator_url}/healthz"))

    def console(self) -> ManagedProcess:
        """The web console: a plain HTTP client of the coordinator, registry and task store (no broker identity)."""
        env = {
            **self.base_env(),
            "MESH_HTTP_PORT": str(self.ports.console),
            "MESH_COORDINATOR_URL": self.coordinator_url,
            "MESH_PUBLIC_URL": self.coordinator_url,
            "MESH_REGISTRY_URL": self.registry_url,
            "MESH_TASKSTORE_URL": self.taskstore_url,
            **self.internal_client_env("console"),
        }
        return ManagedProcess(
            "console",
            [sys.executable, "-m", "mesh_console"],
            self.run_dir / "logs" / "console.log",
            http_ready(f"{self.console_url}/livez"),
            env=env,
        )

    def agent(self, agent_id: str, package: str, **env: str) -> ManagedProcess:
        """An agent process; ready once the registry lists it online."""
        settings = {"MESH_AGENT_ID": agent_id, "MESH_HTTP_PORT": str(free_port()), **env}
        return self.service(agent_id, package, settings, self.agent_online(agent_id))

    def agent_online(self, agent_id: str) -> Callable[[], bool]:
        """A check that passes while the registry lists the agent online."""
        url = f"{self.registry_url}/agents/{self.org}/{self.unit}/{agent_id}"

        def check() -> bool:
            try:
                response = httpx.get(url, timeout=1.0, verify=self.internal_verify())
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and response.json().get("status") == "online"

        return check

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start everything in dependency order, each one ready before the next starts."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        order = [self.broker(), self.redis(), self.registry(), self.taskstore()]
        order += [self.agent(agent_id, package) for agent_id, package in self.agents.items()]
        order.append(self.coordinator(replicated=self.coordinators > 1))
        order.append(self.console())
        try:
            for process in order:
                self.launch(process, timeout)
            for ordinal in range(1, self.coordinators):  # admitted on the running broker as each is defined
                self.launch(self.coordinator_replica(ordinal, free_port(), free_port()), timeout)
        except Exception:
            self.stop()
            raise

    def launch(self, process: ManagedProcess, timeout: float = 30.0) -> ManagedProcess:
        """Start one more process as part of this stack and wait until it is ready."""
        self.processes[process.name] = process
        process.start()
        process.wait_ready(timeout)
        return process

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything in reverse order; the exit code of each."""
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.processes)):
            codes[name] = self.processes[name].stop()
        return codes

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.processes[name]

    def wait_for(self, check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
        """Poll `check` until it passes (bounded in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{what} not met within {timeout}s")
