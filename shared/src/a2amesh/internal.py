"""The mesh's internal HTTP APIs (registry, task store) over mutual TLS with the broker's PKI: the server presents a
certificate of the mesh CA and asks each client for one; the client's identity is its certificate's common name
(`org/unit/name`, the same as its MQTT username), and each route admits only the identities named for it.

Server side: `tls_server_options` (for `a2amesh.runtime.http_server`) and `IdentityGate` (ASGI). Client side:
`internal_client`, an httpx client that presents the process's own mesh certificate and trusts only the mesh CA.

uvicorn does not put the client's certificate in the ASGI scope, so `PeerIdentityProtocol` (the HTTP protocol of
these servers) reads it from the TLS connection once and hands it to every request of that connection."""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from a2amesh.replicas import acts_as
from a2amesh.settings import InternalTlsSettings, ServiceSettings

if TYPE_CHECKING:  # httpx is the clients' (coordinator, meshctl), not in the registry's or task store's images
    import httpx

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

PEER_SCOPE_KEY = "mesh.peer"
"""Where in the ASGI scope the client's certificate common name is (None: no certificate was presented)."""
PUBLIC_PATHS = frozenset({"/livez", "/healthz", "/metrics"})
"""Probes and scrapes, which carry no mesh certificate (in Kubernetes a NetworkPolicy narrows who reaches them)."""


def peer_name(transport: Any) -> str | None:
    """The common name of the client certificate the TLS handshake verified, if any."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class PeerIdentityProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, with the client certificate's name put into each request's scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        name = peer_name(transport)
        inner = self.app

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            scope[PEER_SCOPE_KEY] = name
            await inner(scope, receive, send)

        self.app = app


def tls_server_options(tls: InternalTlsSettings) -> dict[str, Any]:
    """uvicorn options serving TLS and asking for (not requiring) a client certificate: health probes come
    without one, and `IdentityGate` refuses everything else that does."""
    if not (tls.server_cert_file and tls.server_key_file and tls.ca_file):  # a check, not an assert: -OO drops those
        raise ValueError("internal TLS needs its server certificate, key and CA files (MESH_INTERNAL__*)")
    return {
        "ssl_certfile": str(tls.server_cert_file),
        "ssl_keyfile": str(tls.server_key_file),
        "ssl_ca_certs": str(tls.ca_file),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "http": PeerIdentityProtocol,
    }


@dataclass(frozen=True)
class Rule:
    """Requests with `method` on a path matching `path` are for these identity names (the last part of a CN)."""

    method: str
    path: re.Pattern[str]
    names: frozenset[str]


def rule(method: str, path: str, *names: str) -> Rule:
    return Rule(method, re.compile(path), frozenset(names))


class IdentityGate:
    """ASGI middleware: 401 without a mesh certificate, 403 for an identity of another org/unit or one the route
    does not admit, and for any route not listed (deny by default). Public paths pass."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings, rules: list[Rule]) -> None:
        self.app = app
        self.prefix = f"{settings.org}/{settings.unit}/"
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        peer = scope.get(PEER_SCOPE_KEY)
        if not peer:
            await _reply(send, 401, "a mesh client certificate is required")
            return
        name = peer.removeprefix(self.prefix) if peer.startswith(self.prefix) else None
        for entry in self.rules:
            if entry.method == scope["method"] and entry.path.fullmatch(scope["path"]):
                if name is not None and acts_as(name, entry.names):  # a service's replicas act as it
                    await self.app(scope, receive, send)
                    return
                break
        log.warning("refused %s %s to %s", scope["method"], scope["path"], peer)
        await _reply(send, 403, f"{peer} may not {scope['method']} {scope['path']}")


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """Trust the mesh CA only, and present this process's mesh certificate (by default its broker one)."""
    tls = settings.internal
    if not tls.enabled:
        return None
    ca_file = tls.ca_file or settings.mqtt.ca_file
    cert_file = tls.cert_file or settings.mqtt.cert_file
    key_file = tls.key_file or settings.mqtt.key_file
    if ca_file is None or cert_file is None or key_file is None:
        raise ValueError("internal TLS needs a CA, a certificate and a key (MESH_INTERNAL__* or MESH_MQTT__*)")
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


INTERNAL_URL_FIELDS = ("registry_url", "taskstore_url", "coordinator_url")
"""The settings naming the mesh's own HTTP APIs an internal client calls."""


def internal_client(settings: ServiceSettings, **options: Any) -> httpx.AsyncClient:
    """An httpx client for the registry's and the task store's APIs, with the mesh's mutual TLS when enabled.
    Without it, the public CAs (httpx's default, about 1.4 MB of memory) are loaded only when one of those APIs is
    reached over https; for plain http URLs a context that trusts nothing stands in (unused, and failing closed)."""
    import httpx

    verify: ssl.SSLContext | bool | None = client_ssl_context(settings)
    if verify is None:
        urls = [str(getattr(settings, field, "") or "") for field in INTERNAL_URL_FIELDS]
        https = any(url.startswith("https:") for url in urls)
        verify = True if https else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA loaded: verifies nothing
    return httpx.AsyncClient(verify=verify, **options)
