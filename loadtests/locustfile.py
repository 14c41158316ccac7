"""Locust scenarios for the mesh: run headless with `make loadtest`, or in the web UI with
`uv run locust -f loadtests/locustfile.py --host http://127.0.0.1:8000` (from the repository root).

MeshHttpUser speaks A2A v1.0 JSON-RPC to the coordinator: blocking SendMessage, SendStreamingMessage read over SSE
to the terminal event, GetTask, and a workflow. MeshMqttUser speaks the A2A-over-MQTT binding straight to the echo
agent (request topic, Response Topic, Correlation Data) and reports each task's round trip as a Locust request of
type "MQTT", so the report shows MQTT tasks/s and latency percentiles beside HTTP.

Options (command line, web UI, or environment; see docs/benchmarks.md):
    --mqtt-host / LOCUST_MQTT_HOST          broker host (default $MESH_MQTT__HOST, else 127.0.0.1)
    --mqtt-port / LOCUST_MQTT_PORT          broker port (default $MESH_MQTT__PORT, else 1883)
    --mesh-org, --mesh-unit                 LOCUST_MESH_ORG / LOCUST_MESH_UNIT (default $MESH_ORG/$MESH_UNIT)
    --api-key / LOCUST_API_KEY              the coordinator's API key, sent as a Bearer token (default $MESH_API_KEY)
    --echo-agent / LOCUST_ECHO_AGENT        the agent MQTT users talk to (default echo)
    --payload-bytes / LOCUST_PAYLOAD_BYTES  size of the text each task echoes (default 64)
    --task-timeout / LOCUST_TASK_TIMEOUT    seconds a task may take before it counts as failed (default 30)
    --wait-min, --wait-max                  LOCUST_WAIT_MIN / LOCUST_WAIT_MAX: pause between tasks (0.1 .. 0.5 s)
    --workflow-skill / LOCUST_WORKFLOW_SKILL a coordinator workflow skill, e.g. workflow.pipeline (see WORKFLOW HOOK)
    --workflow-metadata / LOCUST_WORKFLOW_METADATA  JSON metadata for that skill (default {})
    LOCUST_HTTP_WEIGHT / LOCUST_MQTT_WEIGHT relative numbers of HTTP and MQTT users (default 1 / 1)
    MESH_MQTT__TLS, __CA_FILE, __CERT_FILE, __KEY_FILE, __USERNAME, __PASSWORD or __PASSWORD_FILE: how MQTT users
                                            authenticate to the broker (a2amesh.settings.MqttSettings)
The coordinator URL is Locust's --host (LOCUST_HOST), defaulting to $MESH_COORDINATOR_URL or http://127.0.0.1:8000.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from locust import HttpUser, User, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

from a2amesh.settings import ServiceSettings
from a2amesh.topics import AgentAddress
from loadtests.a2a import (
    A2A_HEADERS,
    COMPLETED,
    RpcError,
    SseParser,
    artifact_text,
    ends_stream,
    filler_text,
    result_task,
    rpc,
    rpc_result,
    send_params,
    stream_state,
)
from loadtests.mqtt_client import BindingClient, timed

DEFAULT_COORDINATOR = os.environ.get("MESH_COORDINATOR_URL", "http://127.0.0.1:8000")
RESEARCH_QUERY = "how do retained messages work"


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    env = os.environ
    group = parser.add_argument_group("a2a mesh")
    group.add_argument(
        "--mqtt-host", env_var="LOCUST_MQTT_HOST", default=env.get("MESH_MQTT__HOST", "127.0.0.1"), help="broker"
    )
    group.add_argument(
        "--mqtt-port", env_var="LOCUST_MQTT_PORT", type=int, default=int(env.get("MESH_MQTT__PORT", "1883"))
    )
    group.add_argument("--mesh-org", env_var="LOCUST_MESH_ORG", default=env.get("MESH_ORG", "acme"))
    group.add_argument("--mesh-unit", env_var="LOCUST_MESH_UNIT", default=env.get("MESH_UNIT", "default"))
    group.add_argument(
        "--api-key",
        env_var="LOCUST_API_KEY",
        default=env.get("MESH_API_KEY", ""),
        help="the coordinator's API key (sent as a Bearer token)",
    )
    group.add_argument("--echo-agent", env_var="LOCUST_ECHO_AGENT", default="echo", help="agent MQTT users call")
    group.add_argument("--payload-bytes", env_var="LOCUST_PAYLOAD_BYTES", type=int, default=64)
    group.add_argument("--task-timeout", env_var="LOCUST_TASK_TIMEOUT", type=float, default=30.0)
    group.add_argument("--wait-min", env_var="LOCUST_WAIT_MIN", type=float, default=0.1)
    group.add_argument("--wait-max", env_var="LOCUST_WAIT_MAX", type=float, default=0.5)
    group.add_argument(
        "--workflow-skill",
        env_var="LOCUST_WORKFLOW_SKILL",
        default="",
        help="coordinator workflow skill; empty runs the client-side research -> echo sequence",
    )
    group.add_argument(
        "--workflow-metadata",
        env_var="LOCUST_WORKFLOW_METADATA",
        default="{}",
        help='JSON object sent as metadata with the workflow skill, e.g. {"audience": "engineers"}',
    )


def _options_of(environment: Environment) -> Any:
    options = environment.parsed_options
    if options is None:  # Locust used as a library without its parser: the defaults above
        parser = LocustArgumentParser()
        _options(parser)
        options = parser.parse_args([])
    return options


def _pause(user: User) -> float:
    options = _options_of(user.environment)
    return random.uniform(options.wait_min, max(options.wait_min, options.wait_max))


class MeshHttpUser(HttpUser):
    """An A2A client of the coordinator (JSON-RPC over HTTP, SSE for streams)."""

    host = DEFAULT_COORDINATOR
    weight = int(os.environ.get("LOCUST_HTTP_WEIGHT", "1"))
    wait_time = _pause

    def on_start(self) -> None:
        self.options = _options_of(self.environment)
        self.text = filler_text(self.options.payload_bytes)
        self.recent: deque[str] = deque(maxlen=20)
        self._ids = 0
        self.headers = dict(A2A_HEADERS)
        if self.options.api_key:
            self.headers["Authorization"] = f"Bearer {self.options.api_key}"

    def _call(
        self, method: str, params: dict[str, Any], name: str, check: Check | None = None
    ) -> dict[str, Any] | None:
        """One blocking JSON-RPC call, recorded as `name`; its result, or None when it failed (HTTP, JSON-RPC
        error, or `check` saying what is wrong with the result)."""
        self._ids += 1
        with self.client.post(
            "/",
            json=rpc(method, params, self._ids),
            headers=self.headers,
            name=name,
            timeout=self.options.task_timeout,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return None
            try:
                result = rpc_result(response.json())
            except (RpcError, ValueError) as error:
                response.failure(str(error))
                return None
            problem = check(result) if check is not None else None
            if problem:
                response.failure(problem)
                return None
            response.success()
            return result

    def _send(self, name: str, text: str, **metadata: Any) -> dict[str, Any] | None:
        """Blocking SendMessage; the task if it COMPLETED, else None (recorded as a failure)."""
        result = self._call("SendMessage", send_params(text, **metadata), name, _completed)
        if result is None:
            return None
        task = result_task(result)
        assert task is not None
        self.recent.append(task["id"])
        return task

    @task(4)
    def send_message(self) -> None:
        self._send("SendMessage echo", self.text, skill="echo")

    @task(3)
    def send_streaming_message(self) -> None:
        self._ids += 1
        with self.client.post(
            "/",
            json=rpc("SendStreamingMessage", send_params(self.text, skill="echo"), self._ids),
            headers={**self.headers, "Accept": "text/event-stream"},
            name="SendStreamingMessage echo (SSE)",
            stream=True,
            timeout=self.options.task_timeout,
            catch_response=True,
        ) as response:
            try:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    return
                received, states = read_stream(response.iter_content(chunk_size=None))
                # the whole stream is the request: its time is the time to the terminal event
                response.request_meta["response_time"] = (time.time() - response.request_meta["start_time"]) * 1000
                response.request_meta["response_length"] = received
                final = next((state for state in reversed(states) if state), None)
                if final != COMPLETED:
                    response.failure(f"stream ended at {final} after {len(states)} events")
                else:
                    response.success()
            except (RpcError, ValueError) as error:
                response.failure(str(error))
            finally:
                response.close()

    @task(2)
    def get_task(self) -> None:
        if not self.recent:
            self._send("SendMessage echo", self.text, skill="echo")
            return
        self._call("GetTask", {"id": random.choice(self.recent)}, "GetTask", _is_task)

    @task(1)
    def workflow(self) -> None:
        # WORKFLOW HOOK: set LOCUST_WORKFLOW_SKILL (or --workflow-skill) to a coordinator workflow skill (e.g.
        # workflow.pipeline) and this task sends one SendMessage to it instead of chaining the steps here.
        if self.options.workflow_skill:
            metadata = json.loads(self.options.workflow_metadata or "{}")
            name = f"workflow {self.options.workflow_skill}"
            self._send(name, RESEARCH_QUERY, **{**metadata, "skill": self.options.workflow_skill})
            return
        research = self._send("workflow step 1: research", RESEARCH_QUERY, skill="research")
        if research is None:
            return
        summary = artifact_text(research) or json.dumps(research.get("artifacts", []))[:500]
        self._send("workflow step 2: echo", summary[:2000], skill="echo")


Check = Callable[[dict[str, Any]], str | None]


def read_stream(chunks: Iterable[bytes]) -> tuple[int, list[str | None]]:
    """Read SSE chunks up to the event that ends the task: (bytes read, the state each event carried)."""
    parser = SseParser()
    received = 0
    states: list[str | None] = []
    for chunk in chunks:
        received += len(chunk)
        for body in parser.feed(chunk):
            result = rpc_result(body)
            states.append(stream_state(result))
            if ends_stream(result):
                return received, states
    return received, states


def _completed(result: dict[str, Any]) -> str | None:
    task = result_task(result)
    state = task.get("status", {}).get("state") if task else None
    return None if state == COMPLETED else f"task ended {state}"


def _is_task(result: dict[str, Any]) -> str | None:
    return None if result_task(result) is not None else "GetTask returned no task"


class MeshMqttUser(User):
    """An A2A-over-MQTT requester talking straight to the echo agent's request topic."""

    weight = int(os.environ.get("LOCUST_MQTT_WEIGHT", "1"))
    wait_time = _pause

    def on_start(self) -> None:
        self.options = _options_of(self.environment)
        self.text = filler_text(self.options.payload_bytes)
        self.topic = AgentAddress(self.options.mesh_org, self.options.mesh_unit, self.options.echo_agent).request_topic
        # TLS files and credentials: MESH_MQTT__TLS, __CA_FILE, __CERT_FILE, __KEY_FILE, __USERNAME, __PASSWORD(_FILE)
        address = {"host": self.options.mqtt_host, "port": self.options.mqtt_port}
        settings = ServiceSettings().mqtt.model_copy(update=address)
        self.client = BindingClient(settings, self.options.mesh_org, self.options.mesh_unit)
        self.client.connect()

    def on_stop(self) -> None:
        self.client.close()

    def _task(self, method: str, name: str) -> None:
        params = send_params(self.text, task_id=str(uuid.uuid4()))
        elapsed, reply, error = timed(self.client.request, self.topic, method, params, self.options.task_timeout)
        if error is None:
            final = stream_state(reply.last)
            if final != COMPLETED:
                error = RpcError(f"task ended {final}")
        self.environment.events.request.fire(
            request_type="MQTT",
            name=name,
            response_time=elapsed,
            response_length=reply.size if reply is not None else 0,
            exception=error,
            context={},
        )

    @task(3)
    def send_streaming_message(self) -> None:
        self._task("SendStreamingMessage", f"SendStreamingMessage {self.options.echo_agent}")

    @task(1)
    def send_message(self) -> None:
        self._task("SendMessage", f"SendMessage {self.options.echo_agent}")
