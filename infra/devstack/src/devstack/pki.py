"""The mesh's dev PKI and broker identities: a CA, the broker's server certificate, and for every identity a client
certificate (CN = its MQTT client id), a password, and a dynamic-security client bound to that client id with a
role of least privilege. `make certs` writes them; the dev stack and the tests use the same code.

Production brings its own CA (docs/security.md): only `ca.crt`, the broker's pair and the clients' pairs change."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from a2amesh.brokerstats import BROKER_STATISTIC_TOPICS

DYNSEC_ITERATIONS = 101
ADMIN = "mesh-admin"
TESTER = "mesh-tester"
ENROLLER = "mesh-enroller"
"""Creates agent replicas' identities as their pods start (`python -m a2amesh.enroll`): the admin's rights (dynsec
cannot confine control commands), but not pinned, so replicas starting together each connect under their own id."""
REPLICA_PLACEHOLDER = "{replica}"


class Role(StrEnum):
    """What an identity may do on the broker."""

    AGENT = "agent"  # serve its own requests (and its pool), publish its card, events and replies
    REQUESTER = "requester"  # send requests to agents and pools, read its own reply inbox
    COORDINATOR = "coordinator"  # a requester that also records events for agents that do not, and task owners
    REGISTRY = "registry"  # read the cards, and the broker's statistics it exports (a2amesh.brokerstats)
    TASKSTORE = "taskstore"  # read the events and the task owners
    OBSERVER = "observer"  # read cards and events (meshctl events)
    HEALTH = "health"  # read the broker's uptime, nothing else
    BRIDGE = "bridge"  # an edge broker's link: carries its agents' cards, replies and events in, their requests out
    TESTER = "tester"  # tests only: everything, any client id (never issued by `make certs`)


@dataclass(frozen=True)
class Identity:
    """One principal on the broker."""

    name: str
    role: Role
    pool: str | None = None
    site_agents: tuple[str, ...] = ()
    """A bridge only: the agents connected to its edge broker (the only ones whose topics it may carry)."""
    site_pools: tuple[str, ...] = ()
    """A bridge only: the pools served at its edge site."""

    def username(self, org: str, unit: str) -> str:
        """The MQTT username (for a pinned identity also its only client id)."""
        return self.name if self.role in (Role.TESTER, Role.HEALTH) else f"{org}/{unit}/{self.name}"

    @property
    def pinned(self) -> bool:
        """Whether the broker admits this identity only under its username as client id. Requesters are not pinned:
        standard requesters (the a2a-over-mqtt SDK) connect as `<username>-<session>`, one client id per call."""
        return self.role not in (Role.TESTER, Role.REQUESTER)

    def acls(self, org: str, unit: str) -> list[dict[str, object]]:
        """The dynamic-security ACLs of this identity (explicit topics: 2.0's dynsec substitutes no %c)."""
        me = self.username(org, unit)
        if self.role is Role.BRIDGE:
            send, subscribe = _bridge(org, unit, self.site_agents, self.site_pools)
        else:
            send, subscribe = _ROLE_RIGHTS[self.role](me, org, unit, self.pool)
        acls = [_acl("publishClientSend", t) for t in send] + [_acl("subscribePattern", t) for t in subscribe]
        if self.role is Role.REQUESTER:
            # free to choose its client id, a requester could take over another client's session (and its
            # subscriptions): whatever it is subscribed to, it receives only what it may subscribe to itself
            acls += [_acl("publishClientReceive", t, priority=1) for t in subscribe]
            acls += [_acl("publishClientReceive", t, allow=False) for t in RECEIVE_NOTHING_ELSE]
        return acls


RECEIVE_NOTHING_ELSE = ("#", "$a2a/#", "$SYS/#", "$CONTROL/#")
"""Every topic (a `#` filter matches no topic that starts with `$`, so those roots are named)."""


def _acl(acltype: str, topic: str, *, priority: int = 0, allow: bool = True) -> dict[str, object]:
    return {"acltype": acltype, "topic": topic, "priority": priority, "allow": allow}


def _agent(me: str, org: str, unit: str, pool: str | None) -> tuple[list[str], list[str]]:
    subscribe = [f"$a2a/v1/request/{me}"]
    if pool:  # only the pool's own share group: a private group would see every pool request
        subscribe.append(f"$share/a2a.{org}.{unit}.{pool}/a2a/v1/pool/{org}/{unit}/{pool}")
    return [f"$a2a/v1/discovery/{me}", f"$a2a/v1/event/{me}", f"$a2a/v1/reply/{org}/#"], subscribe


def _requester(me: str, org: str, unit: str, pool: str | None) -> tuple[list[str], list[str]]:
    # requests to any agent or pool of its org; its own reply inboxes; its org's cards, to find agents
    return [f"$a2a/v1/request/{org}/#", f"a2a/v1/pool/{org}/#"], [f"$a2a/v1/reply/{me}/+", f"$a2a/v1/discovery/{org}/#"]


def _coordinator(me: str, org: str, unit: str, pool: str | None) -> tuple[list[str], list[str]]:
    send, _ = _requester(me, org, unit, pool)  # it finds agents through the registry, not the cards
    return [*send, f"$a2a/v1/event/{me}", f"$a2a/v1/owner/{me}"], [f"$a2a/v1/reply/{me}/+"]


def _bridge(org: str, unit: str, agents: tuple[str, ...], pools: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """What an edge site's bridge may do on the central broker: publish its own agents' cards and events and replies
    to the org's requesters; take only requests addressed to its own agents and pools (plain subscriptions: a pool
    bridged to an edge site is served there only, docs/operations.md)."""
    send = [f"$a2a/v1/{kind}/{org}/{unit}/{agent}" for kind in ("discovery", "event") for agent in agents]
    subscribe = [f"$a2a/v1/request/{org}/{unit}/{agent}" for agent in agents]
    return [*send, f"$a2a/v1/reply/{org}/#"], subscribe + [f"a2a/v1/pool/{org}/{unit}/{pool}" for pool in pools]


_ROLE_RIGHTS = {
    Role.AGENT: _agent,
    Role.REQUESTER: _requester,
    Role.COORDINATOR: _coordinator,
    # the cards, and each `$SYS` statistic the registry exports for the dashboard by its exact topic, no other
    Role.REGISTRY: lambda me, org, unit, pool: ([], ["$a2a/v1/discovery/#", *BROKER_STATISTIC_TOPICS]),
    Role.TASKSTORE: lambda me, org, unit, pool: ([], ["$a2a/v1/event/#", "$a2a/v1/owner/#"]),
    Role.OBSERVER: lambda me, org, unit, pool: ([], ["$a2a/v1/event/#", "$a2a/v1/discovery/#"]),
    Role.HEALTH: lambda me, org, unit, pool: ([], ["$SYS/broker/uptime"]),
    Role.TESTER: lambda me, org, unit, pool: (["#", "$a2a/#"], ["#", "$a2a/#", "$share/#", "$SYS/#"]),
}


@dataclass(frozen=True)
class ClientFiles:
    """What a process needs to connect as an identity."""

    username: str
    cert: Path
    key: Path
    password_file: Path

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()


class Pki:
    """A directory holding the CA, the broker's certificate, and each identity's certificate and password."""

    def __init__(self, root: Path, org: str = "acme", unit: str = "default") -> None:
        self.root = root
        self.org = org
        self.unit = unit

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def dynsec_file(self) -> Path:
        return self.root / "dynamic-security.json"

    @property
    def api_keys_file(self) -> Path:
        """The coordinator's API keys, one per line (the first one is the dev key)."""
        return self.root / "coordinator-api-keys"

    @property
    def card_signing_key_file(self) -> Path:
        """The coordinator's EC P-256 key that signs the agent cards it serves (PEM, PKCS#8)."""
        return self.root / "coordinator-card-signing.key"

    @property
    def outside_file(self) -> Path:
        """The identities admitted one at a time (`make identity`): `make certs` keeps them in the broker's seed."""
        return self.root / "outside-identities.json"

    def enroll_template(self, pool: str) -> Path:
        """The file a replica of `pool` enrolls from: its dynsec role and client with the replica's name left as
        REPLICA_PLACEHOLDER (written from `Identity.acls`, the one place rights are defined)."""
        return self.root / "enroll" / f"{pool}.json"

    def write_enroll_template(self, pool: str) -> Path:
        """Write (or refresh) the pool's enrollment template: an agent's pool (its replicas share its subscription),
        or a service whose replicas enroll (SERVICE_REPLICAS: coordinator pods and the workflows agents they host,
        task store partitions, registry replicas)."""
        role = SERVICE_REPLICAS.get(pool)
        identity = Identity(REPLICA_PLACEHOLDER, role) if role else Identity(REPLICA_PLACEHOLDER, Role.AGENT, pool)
        username = identity.username(self.org, self.unit)
        template = {
            "pool": pool,
            "username": username,
            "clientid": username,
            "rolename": f"id:{username}",
            "acls": identity.acls(self.org, self.unit),
        }
        path = self.enroll_template(pool)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(template, indent=1) + "\n")
        return path

    def outside_identities(self) -> list[Identity]:
        """Every identity admitted with `make identity` and not removed since."""
        if not self.outside_file.exists():
            return []
        entries = json.loads(self.outside_file.read_text())
        return [
            Identity(
                name,
                Role(entry["role"]),
                entry.get("pool"),
                tuple(entry.get("site_agents", ())),
                tuple(entry.get("site_pools", ())),
            )
            for name, entry in sorted(entries.items())
        ]

    def record_outside(self, identity: Identity | None, *, forget: str | None = None) -> None:
        """Add an identity to the outside list, or `forget` one by name."""
        entries = {i.name: _outside_entry(i) for i in self.outside_identities()}
        if identity is not None:
            entries[identity.name] = _outside_entry(identity)
        if forget is not None:
            entries.pop(forget, None)
        self.outside_file.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        os.chmod(self.outside_file, 0o600)

    def seed_usernames(self) -> set[str]:
        """The usernames the broker's seed configuration admits."""
        if not self.dynsec_file.exists():
            return set()
        return {str(client["username"]) for client in json.loads(self.dynsec_file.read_text())["clients"]}

    def update_seed(self, identity: Identity, *, remove: bool = False) -> None:
        """Put one identity's client and role into the seed configuration (or take them out), leaving the rest:
        a broker seeded later (a new data directory, a re-seed) then admits what the running one admits."""
        if not self.dynsec_file.exists():
            return
        config = json.loads(self.dynsec_file.read_text())
        username = identity.username(self.org, self.unit)
        config["clients"] = [c for c in config["clients"] if c["username"] != username]
        config["roles"] = [r for r in config["roles"] if r["rolename"] != f"id:{username}"]
        if not remove:
            client, role = self.dynsec_entries(identity)
            config["clients"].append(client)
            config["roles"].append(role)
        self.dynsec_file.write_text(json.dumps(config, indent=1))
        os.chmod(self.dynsec_file, 0o600)

    def api_key(self) -> str:
        """The dev API key clients present to the coordinator (created when missing)."""
        self._ensure_ca()
        if not self.api_keys_file.exists():
            self.api_keys_file.write_text(f"mesh-{secrets.token_urlsafe(24)}\n")
            os.chmod(self.api_keys_file, 0o600)
        return self.api_keys_file.read_text().split()[0]

    def card_signing_key(self) -> Path:
        """The card-signing key, Ed25519 (created when missing, and in place of the EC P-256 key earlier dev PKIs
        made, which would make the coordinator load `cryptography` for it): its public half is the coordinator's
        JWKS."""
        self._ensure_ca()
        if not self.card_signing_key_file.exists() or not _is_ed25519(self.card_signing_key_file):
            key = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            self.card_signing_key_file.write_bytes(key)
            os.chmod(self.card_signing_key_file, 0o600)
        return self.card_signing_key_file

    def ensure(
        self,
        identities: list[Identity],
        broker_hosts: tuple[str, ...] = ("localhost", "broker"),
        pools: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Create whatever is missing (idempotent: existing keys, certificates and passwords are kept)."""
        self._ensure_ca()
        if not self.broker_cert.exists():
            self.issue("broker", server_names=broker_hosts)
        for identity in [Identity(ADMIN, Role.TESTER), Identity(ENROLLER, Role.TESTER), *identities]:
            self.client(identity)
        for pool in sorted({*pools, *SERVICE_REPLICAS, *(identity.pool for identity in identities if identity.pool)}):
            self.write_enroll_template(pool)
        self.write_dynsec(identities)
        self.api_key()
        self.card_signing_key()

    def _ensure_ca(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.ca_cert.exists():
            key = _new_key()
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"a2a mesh dev CA ({self.org})")])
            builder = _builder(name, name, key.public_key(), days=3650).add_extension(
                x509.BasicConstraints(ca=True, path_length=0), critical=True
            )
            _write_pair(self.root / "ca", builder.sign(key, hashes.SHA256()), key)

    def issue(
        self,
        stem: str,
        *,
        common_name: str | None = None,
        server_names: tuple[str, ...] = (),
        days: int = 397,
        not_before: dt.datetime | None = None,
        ca: tuple[Path, Path] | None = None,
    ) -> Path:
        """A certificate signed by the CA (or another CA), written as <stem>.crt/.key under the root."""
        ca_cert_path, ca_key_path = ca or (self.ca_cert, self.root / "ca.key")
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or stem)])
        builder = _builder(subject, ca_cert.subject, key.public_key(), days=days, not_before=not_before)
        if server_names:
            alt = [x509.DNSName(host) for host in server_names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        path = self.root / stem
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_pair(path, builder.sign(ca_key, hashes.SHA256()), key)  # type: ignore[arg-type]
        return _with(path, ".crt")

    def client(self, identity: Identity) -> ClientFiles:
        """The certificate, key and password of an identity, created when missing."""
        self._ensure_ca()
        username = identity.username(self.org, self.unit)
        stem = self.root / "clients" / username  # org/unit/name: stacks of several orgs may share one PKI
        if not _with(stem, ".crt").exists():
            self.issue(f"clients/{username}", common_name=username)
        password_file = _with(stem, ".password")
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(password_file, 0o600)
        return ClientFiles(username, _with(stem, ".crt"), _with(stem, ".key"), password_file)

    def dynsec_entries(self, identity: Identity) -> tuple[dict[str, object], dict[str, object]]:
        """The dynamic-security client and role of an identity."""
        files = self.client(identity)
        rolename = f"id:{files.username}"
        client: dict[str, object] = {
            "username": files.username,
            "roles": [{"rolename": rolename}],
            **dynsec_password(files.password),
        }
        if identity.pinned:
            client["clientid"] = files.username  # the broker refuses this identity under any other client id
        return client, {"rolename": rolename, "acls": identity.acls(self.org, self.unit)}

    def write_dynsec(self, identities: list[Identity]) -> None:
        """The broker's dynamic-security configuration: deny by default, one role per identity (those given, and
        those admitted with `make identity`)."""
        admin = self.client(Identity(ADMIN, Role.TESTER))
        enroller = self.client(Identity(ENROLLER, Role.TESTER))
        clients: list[dict[str, object]] = [
            {"username": ADMIN, "clientid": ADMIN, "roles": [{"rolename": "admin"}], **dynsec_password(admin.password)},
            {"username": ENROLLER, "roles": [{"rolename": "admin"}], **dynsec_password(enroller.password)},
        ]
        roles: list[dict[str, object]] = [{"rolename": "admin", "acls": _ADMIN_ACLS}]
        names = {identity.name for identity in identities}
        outside = [identity for identity in self.outside_identities() if identity.name not in names]
        for identity in [*identities, *outside]:
            client, role = self.dynsec_entries(identity)
            clients.append(client)
            roles.append(role)
        config = {
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": True,
                "subscribe": False,
                "unsubscribe": True,
            },
            "clients": clients,
            "groups": [],
            "roles": roles,
        }
        self.dynsec_file.write_text(json.dumps(config, indent=1))
        os.chmod(self.dynsec_file, 0o600)


SERVICE_REPLICAS = {
    "coordinator": Role.COORDINATOR,
    "workflows": Role.AGENT,
    "taskstore": Role.TASKSTORE,
    "registry": Role.REGISTRY,
}
"""Services whose Kubernetes pods enroll `<service>-<ordinal>` as they start (k8s/base/coordinator.yaml,
taskstore.yaml, registry.yaml): each coordinator replica, the workflows agent it hosts (no pool: each answers only
its own replica's workflows), each task store partition and each registry replica."""

_ADMIN_ACLS = [
    {"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "priority": 0, "allow": True},
    {"acltype": "publishClientReceive", "topic": "$CONTROL/dynamic-security/#", "priority": 0, "allow": True},
    {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "priority": 0, "allow": True},
]


def _outside_entry(identity: Identity) -> dict[str, object]:
    entry: dict[str, object] = {"role": identity.role.value, "pool": identity.pool}
    if identity.role is Role.BRIDGE:
        entry |= {"site_agents": list(identity.site_agents), "site_pools": list(identity.site_pools)}
    return entry


def dynsec_password(password: str) -> dict[str, object]:
    """A password as Mosquitto's dynamic-security plugin stores it (PBKDF2-SHA512, base64)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, DYNSEC_ITERATIONS, 64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": DYNSEC_ITERATIONS,
    }


def _is_ed25519(key_file: Path) -> bool:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    return isinstance(key, ed25519.Ed25519PrivateKey)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    days: int,
    not_before: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )


def _with(stem: Path, extension: str) -> Path:
    """stem + extension (not Path.with_suffix: identity names may contain dots)."""
    return stem.parent / (stem.name + extension)


def _write_pair(stem: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    _with(stem, ".crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path = _with(stem, ".key")
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
