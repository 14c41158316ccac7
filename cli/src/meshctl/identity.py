"""`meshctl identity`: the operator's verb for outside participants, the same code as `make identity` and
`make identity-remove` (devstack.identities): issue into the PKI folder and admit on the running broker, or revoke."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from devstack.identities import Broker, DynsecError, IdentityError, admit, parse_identity, revoke
from devstack.pki import Pki
from meshctl import render
from meshctl.client import CliError

DEV_PKI = Path("infra") / "broker-certs"

identity_app = typer.Typer(
    help="Admit or revoke an outside requester or agent on the running broker (needs the PKI folder: the CA and "
    "mesh-admin).",
    no_args_is_help=True,
)

PkiOption = Annotated[
    Path | None,
    typer.Option("--pki-dir", envvar="MESH_PKI_DIR", help="The PKI folder (default: infra/broker-certs of the repo)."),
]


def find_pki(given: Path | None, org: str, unit: str) -> Pki:
    """The PKI folder: as given, else the repository's dev one (`make certs`)."""
    if given is not None:
        folder = given
    else:
        found = [f / DEV_PKI for f in (Path.cwd(), *Path.cwd().parents) if (f / DEV_PKI / "ca.crt").is_file()]
        if not found:
            raise CliError("no PKI folder: run inside the repository after `make certs`, or give --pki-dir", code=2)
        folder = found[0]
    if not (folder / "ca.crt").is_file():
        raise CliError(f"{folder} holds no ca.crt: not a PKI folder (`make certs` writes one)", code=2)
    return Pki(folder, org, unit)


def add(pki: Pki, name: str, role: str, pool: str | None, broker: Broker) -> dict[str, str]:
    """Admit one identity; what a client needs to connect as it."""
    try:
        identity = parse_identity(name, role, pool)
        files = admit(pki, identity, None)
        admit(pki, identity, broker)
    except IdentityError as error:
        raise CliError(str(error), code=2) from None
    except DynsecError as error:
        raise CliError(f"{name} issued but not admitted: {error}; run the same command once the broker is up") from None
    return {
        "username": files.username,
        "role": identity.role.value,
        "clientId": files.username if identity.pinned else f"{files.username}[-<session>]",
        "broker": f"mqtts://{broker.host}:{broker.port}",
        "caFile": str(pki.ca_cert),
        "certFile": str(files.cert),
        "keyFile": str(files.key),
        "passwordFile": str(files.password_file),
    }


def remove(pki: Pki, name: str, broker: Broker) -> dict[str, str]:
    try:
        identity = revoke(pki, name, broker)
    except IdentityError as error:
        raise CliError(str(error), code=2) from None
    except DynsecError as error:
        raise CliError(f"{name} not revoked: {error}") from None
    return {"username": identity.username(pki.org, pki.unit), "role": identity.role.value, "revoked": "yes"}


def show(record: dict[str, str], as_json: bool) -> None:
    if as_json:
        render.print_json(record)
    else:
        render.stdout().print("\n".join(f"{key:<13} {value}" for key, value in record.items()))


def listed(pki: Pki) -> list[dict[str, str]]:
    return [
        {"username": i.username(pki.org, pki.unit), "role": i.role.value, "pool": i.pool or ""}
        for i in pki.outside_identities()
    ]


__all__ = ["Broker", "Pki", "add", "find_pki", "identity_app", "listed", "remove", "show"]
