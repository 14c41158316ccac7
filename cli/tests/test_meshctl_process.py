"""meshctl as a real process: the entry point, and Ctrl-C (SIGINT) ending a command cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from devstack.pki import Identity, Role
from devstack.processes import default_signal_dispositions
from devstack.stack import Stack


def start(mesh: Stack, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "MESH_COORDINATOR_URL": mesh.coordinator_url,
        "MESH_API_KEY": mesh.api_key,
        **mesh.identity_env(Identity("meshctl", Role.OBSERVER)),
        "MESH_ORG": mesh.org,
        "MESH_UNIT": mesh.unit,
    }
    command = [sys.executable, "-m", "meshctl", *args]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signal_dispositions,
    )


def interrupt_when(process: subprocess.Popen[str], ready: str, timeout: float = 20) -> tuple[str, str]:
    """Wait until stdout or stderr shows `ready`, send SIGINT, return (stdout, stderr)."""
    stream = process.stderr if ready.startswith("following") else process.stdout
    assert stream is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while ready not in seen:
        assert time.monotonic() < deadline and process.poll() is None, f"never saw {ready!r}: {seen}"
        seen += stream.readline()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    return (out, seen + err) if stream is process.stderr else (seen + out, err)


def test_ctrl_c_stops_events_cleanly(mesh: Stack) -> None:
    process = start(mesh, "events")
    _, err = interrupt_when(process, "following")
    assert process.returncode == 0 and "stopped" in err and "Traceback" not in err


def test_ctrl_c_during_send_says_the_task_goes_on(mesh: Stack) -> None:
    process = start(mesh, "send", "slow", "--skill", "echo", "--meta", "delayMs=20000")
    out, err = interrupt_when(process, "echoing in")
    assert process.returncode == 130, out + err
    assert "goes on without you" in err and "meshctl cancel " in err and "Traceback" not in err
    task_id = err.split("meshctl cancel ", 1)[1].split()[0]
    canceled = start(mesh, "cancel", task_id)
    assert canceled.wait(timeout=30) == 0
