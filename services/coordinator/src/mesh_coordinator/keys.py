"""`python -m mesh_coordinator.keys ID [--scopes send,read,cancel] [--tenant T]`: a new API key; its help text is
DESCRIPTION (a constant, not this docstring: the image runs at PYTHONOPTIMIZE=2, which drops docstrings)."""

from __future__ import annotations

import argparse
import secrets
import sys

from mesh_coordinator.auth import LEGACY_SCOPES, SCOPES, KeyFileError, digest_of, parse_key_line

DESCRIPTION = """A new API key. Prints the key (give it to the caller; it is shown once) on stdout and the line for
the keys file on stderr, which holds only the key's SHA-256 digest. Append the line to MESH_API_KEYS_FILE: the
coordinator picks it up without a restart."""
"""The command's help: a constant, not the module's docstring, which the image drops (it runs with PYTHONOPTIMIZE=2)."""


def key_line(key_id: str, secret: str, scopes: frozenset[str], tenant: str = "") -> str:
    """The keys-file line of a key: its id, digest, scopes and tenant (never the key)."""
    line = f"{key_id} sha256:{digest_of(secret).hex()} scopes={','.join(sorted(scopes))}"
    return f"{line} tenant={tenant}" if tenant else line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh_coordinator.keys", description=DESCRIPTION)
    parser.add_argument("id", help="the key's id (shown in the audit trail as key:<id>)")
    parser.add_argument("--scopes", default=",".join(sorted(LEGACY_SCOPES)), help=f"of {', '.join(sorted(SCOPES))}")
    parser.add_argument("--tenant", default="", help="the caller's tenant (optional)")
    args = parser.parse_args(argv)
    secret = f"mesh-{secrets.token_urlsafe(24)}"
    line = key_line(args.id, secret, frozenset(s for s in args.scopes.split(",") if s), args.tenant)
    try:
        parse_key_line(line)  # the same checks the coordinator makes
    except KeyFileError as error:
        parser.error(str(error).removeprefix("line 0: "))
    print(secret)
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
