"""Settings from the environment: the one place every service reads its configuration.

Every variable is prefixed `MESH_`; nested groups use `__`, e.g. `MESH_MQTT__HOST`. Each service builds the
settings class it needs; all share `MqttSettings` and the mesh identity.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from a2amesh.topics import AgentAddress, check_id


class MqttSettings(BaseModel):
    """How to reach the broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    password_file: Path | None = Field(default=None, description="read the password from this file (a mounted secret)")
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry: int = Field(default=3600, description="seconds the broker keeps a persistent session")
    publish_window: int = Field(
        default=100,
        ge=1,
        description="QoS 1 publishes one connection has out at once (awaiting PUBACK); more wait their turn, in "
        "order (a2amesh.mqtt.PublishWindow). At most the broker's max_inflight_messages (100), its Receive Maximum",
    )
    publish_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a QoS 1 publish, once sent (its turn in the window came), waits for its PUBACK before "
        "it is sent again (within the publisher's own wait)",
    )

    def secret(self) -> str | None:
        """The password: given directly, or read from `password_file`."""
        if self.password is None and self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password


class InternalTlsSettings(BaseModel):
    """Mutual TLS on the internal HTTP APIs (registry, task store), with the broker's PKI (a2amesh.internal)."""

    enabled: bool = Field(default=False, description="serve (registry, task store) or call them over mutual TLS")
    ca_file: Path | None = Field(default=None, description="the mesh CA (default: MESH_MQTT__CA_FILE)")
    cert_file: Path | None = Field(default=None, description="this client's certificate (default: its broker one)")
    key_file: Path | None = Field(default=None, description="this client's key (default: its broker one)")
    server_cert_file: Path | None = Field(default=None, description="a server's certificate (registry, task store)")
    server_key_file: Path | None = None
    readers: list[str] = Field(
        default_factory=lambda: ["coordinator", "meshctl"], description="identities that may read (a server's list)"
    )
    browsers: list[str] = Field(
        default_factory=lambda: ["console"],
        description="identities that may read only the agents' records and the tasks' event logs (the console)",
    )


def read_secret(file: Path | None) -> str | None:
    """A secret kept in a file (a mounted secret), without its trailing newline; None without a file."""
    return None if file is None else file.read_text().strip()


def read_keys(given: list[str], file: Path | None) -> frozenset[str]:
    """Secrets given inline plus those in a file, one per line (blank lines and # comments skipped)."""
    keys = {key.strip() for key in given if key.strip()}
    if file is not None:
        keys |= {line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")}
    return frozenset(keys)


class ServiceSettings(BaseSettings):
    """What every mesh process shares: its identity on the broker, the broker, logging."""

    # defer_build: a process builds the validator of the settings it reads (its own service's) when it first reads
    # them, not every service's at import (idle memory, docs/benchmarks.md); validation is the same
    model_config = SettingsConfigDict(env_prefix="MESH_", env_nested_delimiter="__", extra="ignore", defer_build=True)

    org: str = "acme"
    unit: str = "default"
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    log_level: str = "INFO"
    log_json: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    internal: InternalTlsSettings = Field(default_factory=InternalTlsSettings)
    replica_id: str | None = Field(
        default=None,
        description="this replica's own broker identity when a service runs more than one (`<service>-<n>`, e.g. "
        "coordinator-1; default: the service's name)",
    )

    def address(self, name: str) -> AgentAddress:
        """The mesh address of a component called `name` in this org/unit."""
        return AgentAddress(check_id(self.org, "org id"), check_id(self.unit, "unit id"), name)

    def service_address(self, service: str) -> AgentAddress:
        """The broker identity of this replica of `service`: MESH_REPLICA_ID, else the service's own name. Replicas
        need their own (the broker pins each identity to one client id, so a second one would take the first's
        connection over)."""
        return self.address(check_id(self.replica_id or service, "replica id"))


class AgentSettings(ServiceSettings):
    """An agent process: its id, optional pool, and how much work it takes at once."""

    agent_id: str = "agent"
    http_port: int = Field(default=8080, description="health and metrics; 0 turns the HTTP endpoint off")
    pool: str | None = None
    auth_tokens: list[str] = Field(
        default_factory=list, description="if set, requests must carry `a2a-authorization: Bearer <one of these>`"
    )
    auth_tokens_file: Path | None = Field(default=None, description="more tokens, one per line (a mounted secret)")
    auth_jwks_url: str | None = Field(
        default=None,
        description="if set, requests must carry a token the coordinator minted for this agent's request topic (or "
        "its pool's), verified with this JWKS (the coordinator's /.well-known/jwks.json; needs a2amesh[tokens])",
    )
    auth_issuer: str | None = Field(default=None, description="the `iss` those tokens must carry (coordinator URL)")
    max_concurrent: int = 8
    max_queued: int = 64
    keepalive_interval: float = Field(
        default=10.0,
        description="seconds between keepalives (the current WORKING status, re-sent) to requesters following a "
        "running task, so a silent long task outlives their stream idle timeout; 0 sends none",
    )


class RegistrySettings(ServiceSettings):
    """The registry: its Redis and HTTP port."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="its Redis; the user in it is its ACL user (redis://registry@...)",
    )
    redis_password_file: Path | None = Field(
        default=None, description="that user's password, read from this file (a mounted secret) unless the URL has one"
    )
    http_port: int = 8001
    index_check_interval: float = Field(
        default=2.0, description="seconds between checks that Redis still holds the index"
    )


class TaskStoreSettings(ServiceSettings):
    """The task store: its database, HTTP port, and how it groups events into transactions."""

    database_url: str = Field(
        default="sqlite:///./run/taskstore.db",
        description="its database (SQLAlchemy URL: SQLite, or postgresql+psycopg://<user>@host:port/db); the password "
        "belongs in MESH_DATABASE_PASSWORD_FILE",
    )
    database_password_file: Path | None = Field(
        default=None,
        description="the database user's password, read from this file (a mounted secret); it replaces any password "
        "in the URL (mesh_taskstore.db.database_url combines the two)",
    )
    http_port: int = 8002
    trusted_recorders: list[str] = Field(
        default_factory=lambda: ["coordinator"],
        description="components whose events may name the agent holding a task (User Property a2a-task-agent); "
        "their replicas `<name>-<n>` too",
    )
    partitions: int = Field(
        default=1,
        ge=1,
        le=64,
        description="task store replicas sharing the events: each records the agents whose event topic hashes to "
        "its MESH_PARTITION (mesh_taskstore.partition)",
    )
    partition: int = Field(default=0, ge=0, description="this replica's share, 0..MESH_PARTITIONS-1")
    push_retention: float = Field(
        default=86_400.0,
        ge=0,
        description="seconds after a task ended that its push configs (cursors, leases) are deleted, once every "
        "update went out (delivered or dead-lettered); 0: kept for ever (mesh_taskstore.push)",
    )

    @model_validator(mode="after")
    def _partition_in_range(self) -> TaskStoreSettings:
        if self.partition >= self.partitions:
            raise ValueError(f"MESH_PARTITION={self.partition} is not below MESH_PARTITIONS={self.partitions}")
        return self

    batch_max_events: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="events written in one transaction at most (group commit); keep it at most the broker's "
        "max_inflight_messages (100), or every batch waits out batch_max_wait",
    )
    batch_max_wait: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="seconds a batch waits for more events after its first before it is written (0: never waits)",
    )
    read_pause: float = Field(
        default=0.01,
        ge=0.0,
        le=0.1,
        description="seconds the consumer lets a trickle of events gather on its connection before reading on, so "
        "that one wakeup takes many events, not a few (a backlog is read without pausing; 0: read as they come)",
    )


class CoordinatorSettings(ServiceSettings):
    """The coordinator: where the registry and task store answer, the URL clients reach it at, and who may call."""

    http_port: int = 8000
    public_url: str | None = None
    grpc_port: int | None = Field(default=8010, description="the A2A gRPC binding's port (unset: no gRPC)")
    grpc_public_url: str | None = Field(
        default=None, description="host:port clients reach gRPC at, for the cards (default: MESH_PUBLIC_URL's host)"
    )
    registry_url: str = "http://127.0.0.1:8001"
    taskstore_url: str = "http://127.0.0.1:8002"
    default_skill: str = "echo"
    task_timeout: float = 300.0
    api_keys: list[str] = Field(
        default_factory=list, description="keys clients present (Bearer or X-API-Key): lines of the keys file format"
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="the keys file (docs/security.md): hashed keys with ids, scopes, tenants; re-read on change",
    )
    jwt_issuer: str | None = Field(default=None, description="accept bearer JWTs from this issuer (`iss`)")
    jwt_audience: str | None = Field(default=None, description="the `aud` tokens must name (default: the public URL)")
    jwt_jwks_url: str | None = Field(
        default=None, description="the issuer's JWKS (default: <issuer>/.well-known/jwks.json)"
    )
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], description="allowed signatures")
    jwt_tenant_claim: str = Field(default="tenant", description="the claim naming the caller's tenant")
    jwt_openid_config_url: str | None = Field(
        default=None, description="the issuer's OpenID configuration, declared on the card (openIdConnect scheme)"
    )
    audit_file: Path | None = Field(
        default=None, description="append the audit trail here as JSON lines (always kept in memory, bounded, too)"
    )
    card_signing_key_file: Path | None = Field(
        default=None, description="EC P-256 private key (PEM) the served agent cards are signed with (none: unsigned)"
    )
    max_body_bytes: int = Field(default=1_048_576, description="largest request body accepted (413 above)")
    rate_limit: float = Field(default=50.0, description="requests per second per client, on average (429 above)")
    rate_burst: int = Field(default=100, description="requests a client may send at once")
    rate_limit_redis_url: str | None = Field(
        default=None,
        description="keep the rate limits in this Redis, so they hold across coordinator replicas (default: in "
        "memory, per replica)",
    )
    rate_limit_redis_password_file: Path | None = Field(
        default=None,
        description="the password of that URL's ACL user (redis://coordinator@...), read from this file (a mounted "
        "secret) unless the URL has one",
    )
    replica_read_wait: float = Field(
        default=0.0,
        ge=0.0,
        le=10.0,
        description="seconds to wait for a task another coordinator replica accepted to reach the task store before "
        "it counts as not found (0: a single coordinator; mesh_coordinator.replicas)",
    )
    list_recent_seconds: float = Field(
        default=60.0,
        ge=0.0,
        le=3600.0,
        description="seconds a task this coordinator accepted is listed from its memory until the task store lists "
        "it (ListTasks reads the caller's own writes; mesh_coordinator.listing)",
    )
    workflows_id: str = Field(
        default="workflows",
        description="the hosted workflows agent's id (each coordinator replica hosts its own: workflows-<n>)",
    )
    workflows_mqtt: MqttSettings | None = Field(
        default=None, description="the hosted workflows agent's own broker identity (default: the coordinator's)"
    )
    push_allowed_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDR or address) push webhooks may target although not public, e.g. 10.0.0.0/8",
    )
    push_max_attempts: int = Field(default=6, ge=1, le=20, description="POSTs of one push delivery before it is dead")
    push_backoff: float = Field(default=0.5, gt=0, description="seconds before a push delivery's first retry (doubles)")
    push_backoff_max: float = Field(default=30.0, gt=0, description="longest wait between two push retries")
    push_timeout: float = Field(default=10.0, gt=0, description="seconds a webhook has to answer one POST")
    push_poll_interval: float = Field(
        default=0.5, gt=0, description="seconds between looks for pending deliveries while there is work or news"
    )
    push_idle_interval: float = Field(
        default=5.0, gt=0, description="longest wait between looks while idle (the wait doubles up to it)"
    )
    push_lease_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="how long a replica's claim on a push config's deliveries lasts unless renewed (while it delivers, "
        "every look renews it); another replica takes over a dead one's deliveries after this",
    )
    first_reply_timeout: float = Field(default=15.0, description="profile: seconds to the first reply of an attempt")
    stream_idle_timeout: float = Field(default=30.0, description="profile: longest silence inside a stream")
    request_attempts: int = Field(default=3, description="profile: attempts before an agent counts as unreachable")


class ConsoleSettings(ServiceSettings):
    """The web console: where it reaches the coordinator, registry and task store, as any client would (it holds no
    broker credentials), and the coordinator's URL as people's browsers open it (the links to agent endpoints)."""

    http_port: int = 8003
    coordinator_url: str = "http://127.0.0.1:8000"
    public_url: str | None = Field(
        default=None,
        description="the coordinator as browsers reach it, for links (MESH_PUBLIC_URL, as the coordinator's own "
        "card says; default: coordinator_url)",
    )
    registry_url: str = "http://127.0.0.1:8001"
    taskstore_url: str = "http://127.0.0.1:8002"
    request_timeout: float = Field(default=10.0, description="seconds a call to a mesh service may take")
    key_check_ttl: float = Field(default=30.0, description="seconds a key the coordinator accepted counts as valid")
    live_poll_interval: float = Field(default=1.0, description="seconds between the Live page's task-store polls")
    live_stream_seconds: float = Field(default=300.0, description="longest life of one Live event stream")
    secure_cookie: bool = Field(default=False, description="mark the session cookie Secure (serve over HTTPS)")


class EnrollSettings(AgentSettings):
    """An agent replica enrolling itself as its pod starts (`python -m a2amesh.enroll`, a Kubernetes init container):
    its name (MESH_AGENT_ID, the pod's) and pool, the pool's role template, and the enroller's broker identity."""

    enroll_template: Path = Field(description="the pool's role template `make certs` writes (enroll/<pool>.json)")
    enroll_mqtt: MqttSettings = Field(description="the enroller: may create identities on the broker (dynsec)")
    enroll_out: Path = Field(description="folder the replica's files go to: password, and the copied ones")
    enroll_files_from: Path | None = Field(
        default=None, description="folder with the pool's ca.crt, client.crt, client.key, copied into enroll_out"
    )
