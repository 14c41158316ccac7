"""The coordinator's credentials: the keys file (hashed lines, the legacy plain line, errors that name the line but
never the key), its reload on change, token scopes, the algorithm allow-list, and the keys CLI's lines."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh_coordinator.auth import (
    LEGACY_SCOPES,
    ApiKeys,
    JwtPolicy,
    KeyFileError,
    parse_key_line,
    token_scopes,
)
from mesh_coordinator.jwtauth import JwtVerifier
from mesh_coordinator.keys import DESCRIPTION, key_line


def test_a_hashed_line_has_its_id_scopes_and_tenant() -> None:
    line = key_line("alice", "s3cret", frozenset({"read", "send"}), "t1")
    assert "s3cret" not in line
    key = parse_key_line(line)
    assert key is not None
    assert (key.id, key.scopes, key.tenant) == ("alice", frozenset({"read", "send"}), "t1")
    assert key.digest == hashlib.sha256(b"s3cret").digest()


def test_a_plain_line_is_a_legacy_key_without_admin() -> None:
    key = parse_key_line("mesh-oldkey")
    assert key is not None
    assert key.scopes == LEGACY_SCOPES and "admin" not in key.scopes
    assert key.id == "key-" + hashlib.sha256(b"mesh-oldkey").hexdigest()[:12]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("bob plain-secret", "sha256:"),
        ("bob sha256:zz", "not hex"),
        ("bob sha256:abcd", "64 hex digits"),
        (f"bob sha256:{'0' * 64} scopes=send,root", "unknown scopes"),
        (f"bob sha256:{'0' * 64} colour=red", "unknown option"),
    ],
)
def test_a_bad_line_is_refused_with_its_number_and_without_the_key(line: str, reason: str) -> None:
    with pytest.raises(KeyFileError) as error:
        parse_key_line(line, 7)
    assert reason in str(error.value) and "line 7" in str(error.value)
    assert "plain-secret" not in str(error.value)


def test_comments_and_blank_lines_are_skipped() -> None:
    assert parse_key_line("   ") is None
    assert parse_key_line("# alice sha256:...") is None


def test_the_keys_file_is_reread_when_it_changes_and_a_broken_one_keeps_the_old_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(key_line("alice", "one", frozenset({"read"})) + "\n")
    keys = ApiKeys([], keys_file)
    found = keys.find("one")
    assert found is not None and found.id == "alice"
    assert keys.find("two") is None

    keys_file.write_text(key_line("bob", "two", frozenset({"send"})) + "\n")
    os.utime(keys_file, ns=(1, 1))  # a different mtime even within the filesystem's timestamp granularity
    keys._checked = 0.0  # skip the once-a-second throttle, not the change detection
    assert keys.find("one") is None
    found = keys.find("two")
    assert found is not None and found.id == "bob"

    keys_file.write_text("bob sha256:broken\n")
    os.utime(keys_file, ns=(2, 2))
    keys._checked = 0.0
    assert keys.find("two") is not None  # the last good keys stay in force


def test_a_keys_file_that_cannot_be_read_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ApiKeys([], tmp_path / "missing")


def test_token_scopes_come_from_scope_or_scp_and_unknown_names_are_dropped() -> None:
    assert token_scopes({"scope": "read send openid"}) == {"read", "send"}
    assert token_scopes({"scp": ["cancel", "admin", "x"]}) == {"cancel", "admin"}
    assert token_scopes({"scp": "read"}) == {"read"}
    assert token_scopes({}) == frozenset()


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("RS256", "HS512"), ()])
def test_symmetric_or_no_algorithms_are_refused_at_start(algorithms: tuple[str, ...]) -> None:
    policy = JwtPolicy(issuer="https://i", audience="a", jwks_url="http://127.0.0.1:1/jwks", algorithms=algorithms)
    with pytest.raises(ValueError, match="asymmetric"):
        JwtVerifier(policy)


def test_the_key_tools_help_survives_the_images_optimization() -> None:
    """The coordinator's image runs at PYTHONOPTIMIZE=2, which drops docstrings: the key tool's help is a constant."""
    shown = subprocess.run(
        [sys.executable, "-OO", "-m", "mesh_coordinator.keys", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert " ".join(DESCRIPTION.split()[:8]) in " ".join(shown.stdout.split())
